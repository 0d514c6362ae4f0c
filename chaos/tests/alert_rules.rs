//! The shipped alert rules (`observability/prometheus/alerts.yml`) watch metrics a live
//! deployment exports: every metric name a rule uses is in the `/metrics` of three real
//! regions' nodes, replicators or voters after some traffic (a rule on a name nobody
//! exports can never fire). promtool's unit tests of the rules themselves run in
//! `scripts/test.sh`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use common::{eventually, Regions};

/// Series that exist only while their condition holds, so an idle deployment cannot
/// show them: money in flight is reported per currency only while a transfer is in
/// flight (`region_node::metrics::set_money_in_flight`).
const WHILE_IT_HAPPENS: [&str; 1] = ["ledger_money_in_flight_oldest_seconds"];

/// Every `ledger_...` name in the rules' expressions.
fn names_in_rules(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|token| token.starts_with("ledger_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn exported(regions: &Regions) -> anyhow::Result<BTreeSet<String>> {
    let http = reqwest::Client::new();
    let mut names = BTreeSet::new();
    for region in &regions.deployment.regions {
        for url in [
            format!("{}/metrics", region.api_url),
            format!("http://{}/metrics", region.replicator_metrics),
            format!("http://{}/metrics", region.voter),
        ] {
            let text = http.get(&url).send().await?.text().await?;
            names.extend(
                text.lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split(['{', ' ']).next())
                    .map(str::to_owned),
            );
        }
    }
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_an_alert_rule_uses_is_exported() -> anyhow::Result<()> {
    let rules_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../observability/prometheus/alerts.yml");
    let rules = std::fs::read_to_string(&rules_path)
        .with_context(|| format!("read {}", rules_path.display()))?;
    let used = names_in_rules(&rules);
    assert!(used.len() >= 10, "the rules use the metrics: {used:?}");

    let regions = Regions::start("alert-rules", &[]).await?;
    let from = regions.open(0, 0, "50").await?;
    let to = regions.open(1, 1, "0").await?;
    let (status, body) = regions.transfer(0, &from, &to, "5.00").await?;
    assert_eq!(status, 201, "{body}");
    regions
        .wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await?;
    let missing = eventually(
        "every rule's metric exported",
        Duration::from_secs(30),
        || async {
            let names = exported(&regions).await.ok()?;
            let missing: Vec<&String> = used
                .iter()
                .filter(|n| !names.contains(*n) && !WHILE_IT_HAPPENS.contains(&n.as_str()))
                .collect();
            missing.is_empty().then_some(missing.len())
        },
    )
    .await;
    if missing.is_err() {
        let names = exported(&regions).await?;
        let absent: Vec<&String> = used.iter().filter(|n| !names.contains(*n)).collect();
        anyhow::bail!("rules use metrics no process exports: {absent:?}");
    }
    Ok(())
}

#[test]
fn the_name_scan_finds_names_and_only_names() {
    let rules = "      - alert: X\n        expr: max by (region) (ledger_a_b{x=\"y\"}[5m]) > 2 and ledger_c\n        for: 1m\n        annotations:\n          summary: ledger_not_an_expr\n";
    let names: Vec<String> = names_in_rules(rules).into_iter().collect();
    assert_eq!(names, ["ledger_a_b", "ledger_c"]);
}
