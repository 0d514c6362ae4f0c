//! `ledger-local up --monitoring` on three real regions: a real Prometheus (Debian's
//! package) scrapes all nine processes, loads every shipped rule and evaluates it
//! without error, and every query of the shipped Grafana dashboard
//! (`observability/grafana/ledger.json`) returns data after some traffic: no panel
//! that can never show anything. A query on a misspelt metric is caught the same way.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use common::{eventually, Regions};
use serde_json::Value;

const SCRAPED: Duration = Duration::from_secs(60);

/// Every query of the dashboard, with Grafana's variables as a user of all regions
/// would have them.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$region", ".*");
                let title = panel["title"].as_str().unwrap_or("?").to_owned();
                queries.push((title, expr));
            }
        }
    }
    queries
}

async fn query(http: &reqwest::Client, prometheus: &str, expr: &str) -> anyhow::Result<Vec<Value>> {
    let answer: Value = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(answer["status"] == "success", "{expr}: {answer}");
    Ok(answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The queries that return no series now.
async fn empty_queries(
    http: &reqwest::Client,
    prometheus: &str,
    queries: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let mut empty = Vec::new();
    for (title, expr) in queries {
        if query(http, prometheus, expr).await?.is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    Ok(empty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_every_process_and_every_dashboard_panel_has_data() -> anyhow::Result<()>
{
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("observability/grafana/ledger.json"))
            .context("read the dashboard")?,
    )?;
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "the dashboard's queries: {queries:?}");
    for panel in dashboard["panels"].as_array().context("panels")? {
        if panel["type"] != "row" {
            assert!(
                panel["description"].as_str().is_some_and(|d| d.len() > 20),
                "every panel says what it shows: {}",
                panel["title"]
            );
        }
    }

    let regions = Regions::start_monitored("monitoring").await?;
    let prometheus = regions
        .deployment
        .monitoring
        .as_ref()
        .context("the deployment runs a Prometheus")?
        .url
        .clone();

    // Traffic: a cross-region transfer (saga steps) and a write forwarded to its home.
    let from = regions.open(0, 0, "50").await?;
    let to = regions.open(1, 1, "0").await?;
    let (status, body) = regions.transfer(0, &from, &to, "5.00").await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = regions.deposit(0, &to, "1.00").await?;
    assert_eq!(status, 201, "{body}");

    let http = reqwest::Client::new();
    eventually("Prometheus scrapes all nine processes", SCRAPED, || async {
        let up = query(&http, &prometheus, "up == 1").await.ok()?;
        (up.len() == 9).then_some(())
    })
    .await?;

    let shipped = chaos::deployment::monitoring::RULES;
    let rule_count = shipped
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
        })
        .count();
    eventually(
        "every shipped rule is loaded and evaluates cleanly",
        SCRAPED,
        || async {
            let answer: Value = http
                .get(format!("{prometheus}/api/v1/rules"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let rules: Vec<&Value> = answer["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            (rules.len() == rule_count && rules.iter().all(|r| r["health"] == "ok")).then_some(())
        },
    )
    .await?;

    let names = http
        .get(format!("{prometheus}/api/v1/label/region/values"))
        .query(&[("match[]", "ledger_lease_slots")])
        .send()
        .await?
        .json::<Value>()
        .await?;
    let names: BTreeSet<&str> = names["data"]
        .as_array()
        .context("regions")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["eu-west", "us-east", "ap-south"]),
        "the region variable's values"
    );

    let all_have_data = eventually("every dashboard query returns data", SCRAPED, || async {
        let empty = empty_queries(&http, &prometheus, &queries).await.ok()?;
        empty.is_empty().then_some(())
    })
    .await;
    if all_have_data.is_err() {
        let empty = empty_queries(&http, &prometheus, &queries).await?;
        panic!("dashboard queries without data: {empty:#?}");
    }

    // The check catches a panel that can never show data.
    let planted = vec![(
        "planted".to_owned(),
        "max by (region) (ledger_lease_slotz)".to_owned(),
    )];
    assert_eq!(empty_queries(&http, &prometheus, &planted).await?.len(), 1);
    Ok(())
}
