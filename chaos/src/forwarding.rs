//! What forwarding itself costs. Deposits to one account go alternately straight to its
//! home and to another region (which forwards them to the home), one at a time, so no
//! queue and no other request's work is in either figure; their difference is the
//! hop (one more node, its signed call, the link). `/healthz` at the home, sent the
//! same way, shows what waking a process costs on this machine after the same gap:
//! a machine whose CPUs idle between requests charges every process on a path for it,
//! and a forwarded request has one more process on its path, woken twice.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::demo::{percentile_ms, Client, Sample};
use crate::Deployment;

/// Every region's replicator stopped (SIGSTOP) while this lives, continued (SIGCONT)
/// when it is dropped: the hop measured without the replication work each deposit
/// causes (relay, broker, appliers and their commits) competing for the machine's
/// cores. The writes wait in the outboxes and replicate once the replicators go on.
#[derive(Debug)]
pub struct ReplicationHeld<'a> {
    deployment: &'a Deployment,
    /// The regions whose replicator this stopped (all of them once `hold` returns).
    held: Vec<&'a str>,
}

impl<'a> ReplicationHeld<'a> {
    pub fn hold(deployment: &'a Deployment) -> anyhow::Result<Self> {
        let mut held = ReplicationHeld {
            deployment,
            held: Vec::new(),
        };
        for region in &deployment.regions {
            deployment.hold_replicator(&region.name)?;
            held.held.push(&region.name);
        }
        Ok(held)
    }
}

impl Drop for ReplicationHeld<'_> {
    fn drop(&mut self) {
        for region in &self.held {
            if let Err(error) = self.deployment.release_replicator(region) {
                eprintln!("{error:#}");
            }
        }
    }
}

/// The figures of one gap between requests.
#[derive(Debug, Clone)]
pub struct HopFigures {
    pub gap: Duration,
    pub direct: Vec<Sample>,
    pub forwarded: Vec<Sample>,
    pub healthz: Vec<Sample>,
}

impl HopFigures {
    /// Forwarded minus direct at the median, in ms.
    pub fn hop_p50_ms(&self) -> f64 {
        p(&self.forwarded, 0.5) - p(&self.direct, 0.5)
    }
}

fn p(samples: &[Sample], q: f64) -> f64 {
    percentile_ms(&samples.iter().collect::<Vec<_>>(), q)
}

/// Sends `requests` deposits of 0.01 to `account` at `home` and as many through `via`,
/// alternating which goes first, waiting `gap` before each request; then as many
/// `/healthz` at `home`. Fails on any answer but 201 (200 for `/healthz`), on a direct
/// answer that was forwarded, or on a forwarded one that was not.
pub async fn measure(
    home: &Client,
    via: &Client,
    account: &str,
    requests: usize,
    gap: Duration,
) -> anyhow::Result<HopFigures> {
    let path = format!("/v1/accounts/{account}/deposits");
    let body = json!({"amount": "0.01"});
    let mut figures = HopFigures {
        gap,
        direct: Vec::with_capacity(requests),
        forwarded: Vec::with_capacity(requests),
        healthz: Vec::with_capacity(requests),
    };
    for n in 0..requests {
        let order = if n % 2 == 0 { [home, via] } else { [via, home] };
        for client in order {
            pause(gap).await;
            let (sample, answer) = client.post("deposit", &path, &body, None, None).await?;
            anyhow::ensure!(
                sample.status == 201,
                "deposit through {} answered {}: {answer}",
                client.region,
                sample.status
            );
            let sent_away = client.region != home.region;
            anyhow::ensure!(
                sample.forwarded == sent_away,
                "a deposit through {} was {}forwarded",
                client.region,
                if sample.forwarded { "" } else { "not " }
            );
            if sent_away {
                figures.forwarded.push(sample);
            } else {
                figures.direct.push(sample);
            }
        }
    }
    for _ in 0..requests {
        pause(gap).await;
        let (sample, answer) = home.get("healthz", "/healthz").await?;
        anyhow::ensure!(sample.status == 200, "/healthz answered: {answer}");
        figures.healthz.push(sample);
    }
    Ok(figures)
}

/// The pacing between requests: what is measured is a request after an idle gap (a
/// benchmark's think time, not a wait for a condition).
async fn pause(gap: Duration) {
    if !gap.is_zero() {
        tokio::time::sleep(gap).await;
    }
}

/// One line per gap: direct and forwarded p50/p99, the hop at p50, `/healthz` p50.
pub fn print(home: &str, via: &str, rows: &[HopFigures]) {
    println!(
        "{:>8} {:>22} {:>26} {:>16} {:>16}",
        "gap ms",
        format!("direct at {home} p50/p99"),
        format!("via {via} p50/p99"),
        "hop (p50) ms",
        "/healthz p50 ms"
    );
    for row in rows {
        println!(
            "{:>8} {:>22} {:>26} {:>16.2} {:>16.2}",
            row.gap.as_millis(),
            format!("{:.2} / {:.2}", p(&row.direct, 0.5), p(&row.direct, 0.99)),
            format!(
                "{:.2} / {:.2}",
                p(&row.forwarded, 0.5),
                p(&row.forwarded, 0.99)
            ),
            row.hop_p50_ms(),
            p(&row.healthz, 0.5),
        );
    }
}

/// `ledger-local forwarding`: opens an account at `home` (default: the first region),
/// measures once per gap through `via` (default: the second), prints the figures; with
/// `hold_replication`, again with every replicator stopped.
pub async fn run(
    deployment: &Deployment,
    requests: usize,
    gaps_ms: &[u64],
    (home, via): (Option<&str>, Option<&str>),
    hold_replication: bool,
) -> anyhow::Result<()> {
    let pick = |name: Option<&str>, default: usize| -> anyhow::Result<Client> {
        let region = match name {
            Some(name) => deployment.region(name)?,
            None => deployment
                .regions
                .get(default)
                .context("forwarding needs at least two regions")?,
        };
        Client::new(&region.name, &region.api_url, deployment.api_key.as_deref())
    };
    let (home, via) = (pick(home, 0)?, pick(via, 1)?);
    anyhow::ensure!(home.region != via.region, "--home and --via must differ");
    let (sample, account) = home
        .post(
            "open",
            "/v1/accounts",
            &json!({"currency": "EUR", "home_region": home.region}),
            None,
            None,
        )
        .await?;
    anyhow::ensure!(sample.status == 201, "opening an account failed: {account}");
    let id = account["id"].as_str().context("account id")?;
    println!(
        "deposits to {id} (home {}), one at a time: {requests} straight to {} and {requests} through {}",
        home.region, home.region, via.region
    );
    let rows = measure_gaps(&home, &via, id, requests, gaps_ms).await?;
    println!("\nreplication running (each deposit's relay, broker and appliers share the cores):");
    print(&home.region, &via.region, &rows);
    if hold_replication {
        let held = ReplicationHeld::hold(deployment)?;
        let held_rows = measure_gaps(&home, &via, id, requests, gaps_ms).await;
        drop(held);
        let held_rows = held_rows?;
        println!("\nevery replicator stopped (SIGSTOP) while measuring, continued after:");
        print(&home.region, &via.region, &held_rows);
    }
    Ok(())
}

async fn measure_gaps(
    home: &Client,
    via: &Client,
    account: &str,
    requests: usize,
    gaps_ms: &[u64],
) -> anyhow::Result<Vec<HopFigures>> {
    let mut rows = Vec::new();
    for gap in gaps_ms {
        let gap = Duration::from_millis(*gap);
        rows.push(measure(home, via, account, requests, gap).await?);
    }
    Ok(rows)
}
