//! The real `region-node` binary: configured by environment, ready on /readyz, serving
//! writes, logging JSON with request ids, and draining to a clean exit on SIGTERM.

use std::path::Path;
use std::time::Duration;

use harness::node::{region_node_command, start_region_node};
use harness::{free_port, wait_until, ChildGuard, PgCluster, PgOptions, WorkDir};
use nix::sys::signal::Signal;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Starts the binary on `database_url` and waits until it is ready.
async fn start_node(
    database_url: &str,
    log: &Path,
) -> Result<(ChildGuard, String), Box<dyn std::error::Error>> {
    let port = free_port()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_region-node"));
    let mut command = region_node_command(bin, "ap-south", database_url, port);
    command.env("LEDGER_LOG", "info,region_node=debug");
    let node =
        start_region_node("region-node", command, port, log, Duration::from_secs(30)).await?;
    Ok((node, format!("http://127.0.0.1:{port}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_exits_cleanly_on_sigterm() -> TestResult {
    let dir = WorkDir::temp("node-process")?;
    let mut pg = PgCluster::start(dir.path(), &PgOptions::default()).await?;
    let database_url = pg.create_database("ledger").await?;
    let log = dir.join("node.log");
    let (mut node, base) = start_node(&database_url, &log).await?;
    let http = reqwest::Client::new();

    let opened = http
        .post(format!("{base}/v1/accounts"))
        .header("idempotency-key", "process-test-open")
        .header("x-request-id", "process-test-request")
        .json(&serde_json::json!({ "currency": "EUR" }))
        .send()
        .await?;
    assert_eq!(opened.status().as_u16(), 201);
    assert_eq!(
        opened
            .headers()
            .get("x-served-by-region")
            .and_then(|v| v.to_str().ok()),
        Some("ap-south")
    );

    node.signal(Signal::SIGTERM)?;
    let exited = wait_until(Duration::from_secs(15), Duration::from_millis(20), || {
        std::future::ready(node.exited())
    })
    .await;
    assert_eq!(
        exited.as_deref(),
        Some("exit status: 0"),
        "log: {}",
        std::fs::read_to_string(&log)?
    );

    // Every log line is a JSON object; the request's lines carry its request id.
    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["request_id"] == "process-test-request"),
        "{text}"
    );
    assert!(text.contains("region node stopped"), "{text}");

    // A restart on the same database finds its schema migrated and its data intact.
    let account: serde_json::Value = opened.json().await?;
    let (_node, base) = start_node(&database_url, &dir.join("node-2.log")).await?;
    let read = http
        .get(format!(
            "{base}/v1/accounts/{}",
            account["id"].as_str().unwrap_or_default()
        ))
        .send()
        .await?;
    assert_eq!(read.status().as_u16(), 200);
    pg.stop();
    Ok(())
}
