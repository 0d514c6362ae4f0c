//! Writing a drill's report: `report.json` (everything, for machines), the evidence
//! `ledger-check` reads (`history.jsonl`, every HTTP attempt as one request line;
//! `ownership-history.json`; `regions/<region>.json`), `report.html` (summary, the timeline as an inline SVG plot of
//! successes and errors with the drill's moments marked, per-slot figures, RPO, and
//! the invariants), and the terminal summary.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::figures::BUCKET_MS;
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

fn svg(report: &DrillReport) -> String {
    let buckets = &report.figures.timeline;
    let (width, height, pad) = (900.0, 260.0, 40.0);
    let max = buckets
        .iter()
        .map(|b| b.ok.max(b.errors))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let span = (buckets.len().max(1) as u64 * BUCKET_MS) as f64;
    let x = |ms: f64| pad + ms / span * (width - 2.0 * pad);
    let y = |count: f64| height - pad - count / max * (height - 2.0 * pad);
    let line = |pick: &dyn Fn(&super::figures::Bucket) -> usize| {
        buckets
            .iter()
            .map(|b| {
                format!(
                    "{:.1},{:.1}",
                    x(b.start_ms as f64 + BUCKET_MS as f64 / 2.0),
                    y(pick(b) as f64)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        out,
        r#"<line x1="{pad}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/>"#,
        height - pad,
        width - pad
    );
    let _ = write!(
        out,
        r#"<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{0}" stroke="black"/>"#,
        height - pad
    );
    let _ = write!(
        out,
        r#"<text x="4" y="{pad}">{max:.0}/{BUCKET_MS}ms</text>"#
    );
    let _ = write!(
        out,
        r#"<polyline fill="none" stroke="green" stroke-width="1.5" points="{}"/>"#,
        line(&|b| b.ok)
    );
    let _ = write!(
        out,
        r#"<polyline fill="none" stroke="red" stroke-width="1.5" points="{}"/>"#,
        line(&|b| b.errors)
    );
    for (i, marker) in report.markers.iter().enumerate() {
        let mx = x(marker.at_ms as f64);
        let _ = write!(
            out,
            r#"<line x1="{mx:.1}" y1="{pad}" x2="{mx:.1}" y2="{:.1}" stroke="gray" stroke-dasharray="3,3"/>"#,
            height - pad
        );
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" fill="gray">{}</text>"#,
            mx + 2.0,
            12.0 + (i % 3) as f64 * 11.0,
            i + 1
        );
    }
    let _ = write!(
        out,
        r#"<text x="{pad}" y="{:.1}">0 s</text><text x="{:.1}" y="{:.1}">{:.1} s</text>"#,
        height - pad + 14.0,
        width - pad - 30.0,
        height - pad + 14.0,
        span / 1000.0
    );
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" fill="green">successes</text><text x="{:.1}" y="{:.1}" fill="red">errors</text></svg>"#,
        width - 160.0,
        pad - 8.0,
        width - 80.0,
        pad - 8.0
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
    let _ = write!(out, "<h2>Timeline</h2>{}<ol>", svg(report));
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
