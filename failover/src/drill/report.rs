//! Writing a drill's report: `report.json` (everything, for machines), the evidence
//! `ledger-check` reads (`history.jsonl`, every HTTP attempt as one request line;
//! `ownership-history.json`; `regions/<region>.json`), `report.html` (summary, the timeline plot of [`super::plot`]
//! with its fault bands, per-slot figures, RPO, and the invariants), and the terminal summary.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use ledger_checker::evidence::Evidence;

use super::DrillReport;

pub fn write(report: &DrillReport, evidence: &Evidence, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(report).context("encode report")?;
    std::fs::write(dir.join("report.json"), json).context("write report.json")?;
    evidence.write(dir).context("write the evidence")?;
    std::fs::write(dir.join("report.html"), html(report)).context("write report.html")?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_ms(value: Option<u64>) -> String {
    value.map_or("-".into(), |v| format!("{v} ms"))
}

/// The terminal summary.
pub fn summary(report: &DrillReport) -> String {
    let f = &report.figures;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== drill {} (lease ttl {} ms, {} writes/s, ack={}) ==",
        report.scenario.title(),
        report.lease_ttl_ms,
        report.rate_per_sec,
        report.ack
    );
    let _ = writeln!(
        out,
        "attempts {}, acknowledged {}",
        f.attempts, f.acknowledged
    );
    let label = if report.promote.is_some() {
        "RTO (kill -> first write served)"
    } else {
        "write unavailability"
    };
    let _ = writeln!(
        out,
        "{label} per slot over {} slots: p50 {}, p99 {}, max {}",
        f.per_slot_ms.len(),
        fmt_ms(f.per_slot_p50_ms),
        fmt_ms(f.per_slot_p99_ms),
        fmt_ms(f.per_slot_max_ms)
    );
    for m in &report.moves {
        let _ = writeln!(out, "move {} -> {}: {} slots {} accounts, frozen-to-serving {} ms (drain {} ms, catch-up {} ms, transfer {} ms, release {} ms)",
            m.from, m.to, m.slots.len(), m.accounts.len(), m.unavailable_ms, m.drain_ms, m.catch_up_ms, m.transfer_ms, m.release_ms);
    }
    if let Some(p) = &report.promote {
        let _ = writeln!(
            out,
            "promote {} at epoch {}: slots {:?}, fence {} ms, applied-before-move {:?}",
            p.region, p.epoch, p.slots_to, p.fence_ms, p.applied_before_move
        );
        let _ = writeln!(
            out,
            "RPO: {} acknowledged writes were in no survivor at the kill; outcomes {:?}",
            f.rpo_unreplicated, f.rpo_outcomes
        );
    }
    for c in &report.cycles {
        let _ = writeln!(
            out,
            "cycle {}: killed at {} ms, promoted at {} ms (epoch {}), {} acknowledged writes in no survivor, \
             back at {} ms, sagas settled {} after the return, failback {} ({} refusals)",
            c.region, c.killed_at_ms, c.promoted_at_ms, c.promote_epoch, c.unreplicated,
            c.back_at_ms, fmt_ms(c.sagas_settled_after_return_ms),
            c.failback_ms.map_or("FAILED".into(), |ms| format!("took {ms} ms")),
            c.failback_refusals
        );
    }
    for f in &report.faults {
        let _ = writeln!(
            out,
            "fault {} on {}: {} ms to {} ms, recovery {}",
            f.fault,
            f.target,
            f.injected_at_ms,
            f.healed_at_ms,
            fmt_ms(f.recovery_ms)
        );
    }
    let t = &report.transfers;
    if t.acknowledged > 0 {
        let _ = writeln!(
            out,
            "transfers acknowledged {} ({} refused for insufficient funds); money in flight at the end {:?}",
            t.acknowledged, t.insufficient_funds, t.in_flight_at_end
        );
    }
    let _ = writeln!(
        out,
        "late events by region and outcome: {:?}",
        t.late_events
    );
    let _ = writeln!(
        out,
        "money in flight: at most {} (at {} ms), {} samples",
        report.in_flight.max_amount,
        report.in_flight.max_at_ms,
        report.in_flight.samples.len()
    );
    let _ = writeln!(out, "client-visible errors: {:?}", f.errors_by_kind);
    for check in &report.invariants.checks {
        let _ = writeln!(out, "[{}] {}: {}", check.label(), check.name, check.summary);
        for example in &check.examples {
            let _ = writeln!(out, "       {example}");
        }
    }
    let _ = writeln!(
        out,
        "{}",
        if report.passed() {
            "drill PASSED"
        } else {
            "drill FAILED: invariants broken"
        }
    );
    out
}

fn html(report: &DrillReport) -> String {
    let mut out = String::from("<!doctype html><meta charset=\"utf-8\"><title>Failover drill report</title><body style=\"font-family:sans-serif;max-width:960px\">");
    let _ = write!(
        out,
        "<h1>Failover drill: {}</h1>",
        escape(&report.scenario.title())
    );
    let _ = write!(
        out,
        "<p><b>{}</b></p>",
        if report.passed() {
            "PASSED: every invariant holds"
        } else {
            "FAILED: invariants broken"
        }
    );
    // A plot that cannot be drawn costs the picture, not the report.
    let plot = super::plot::report_svg(report)
        .unwrap_or_else(|e| format!("<p>(no plot: {})</p>", escape(&format!("{e:#}"))));
    let _ = write!(out, "<h2>Timeline</h2>{plot}");
    let bands = super::plot::bands(report);
    if !bands.is_empty() {
        out.push_str("<h3>Faults (the shaded bands)</h3><table border=1 cellpadding=3><tr><th>fault</th><th>from</th><th>to</th></tr>");
        for band in &bands {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{:.2} s</td><td>{:.2} s</td></tr>",
                escape(&band.label),
                band.from_ms as f64 / 1000.0,
                band.to_ms as f64 / 1000.0
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h3>Moments</h3><ol>");
    for marker in &report.markers {
        let _ = write!(
            out,
            "<li>{:.2} s: {}</li>",
            marker.at_ms as f64 / 1000.0,
            escape(&marker.label)
        );
    }
    let _ = write!(
        out,
        "</ol><h2>Summary</h2><pre>{}</pre>",
        escape(&summary(report))
    );
    let _ = write!(
        out,
        "<h2>Per slot (ms)</h2><table border=1 cellpadding=3><tr><th>slot</th><th>ms</th></tr>"
    );
    for (slot, ms) in &report.figures.per_slot_ms {
        let _ = write!(out, "<tr><td>{slot}</td><td>{ms}</td></tr>");
    }
    out.push_str("</table>");
    if !report.figures.rpo_detail.is_empty() {
        out.push_str("<h2>RPO: acknowledged writes in no survivor at the kill</h2><table border=1 cellpadding=3><tr><th>write</th><th>what became of it</th></tr>");
        for (write, fate) in &report.figures.rpo_detail {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(write),
                escape(fate)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</body>");
    out
}
