//! Demo traffic against a running deployment: clients near each region (each talks
//! only to its own region's node) open accounts homed everywhere, deposit, withdraw and
//! transfer across regions; the summary says where each request was served and at what
//! latency, directly at the home or forwarded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_client::{RegionClient, Request};
use ledger_wire::api_schema::AckMode;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};

use crate::Deployment;

/// One answered request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub client_region: String,
    pub kind: &'static str,
    pub status: u16,
    pub forwarded: bool,
    pub home: Option<String>,
    /// The answer is the stored one of an earlier request with the same key.
    pub replayed: bool,
    pub latency: Duration,
}

#[derive(Debug, Clone)]
pub struct DemoAccount {
    pub id: String,
    pub home: String,
}

/// A client of one region's node: `ledger-client`'s [`RegionClient`] (one attempt at
/// this region, no retry elsewhere), each answer recorded as a [`Sample`].
#[derive(Debug, Clone)]
pub struct Client {
    pub region: String,
    pub base: String,
    inner: RegionClient,
}

/// An attempt unanswered after this long fails.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

impl Client {
    /// A client of the region at `base`, sending `api_key` (if the deployment uses
    /// keys) as `Authorization: Bearer` on every request.
    pub fn new(region: &str, base: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        Ok(Client {
            region: region.to_owned(),
            base: base.to_owned(),
            inner: RegionClient::over_http(region, base, api_key, ATTEMPT_TIMEOUT)
                .context("build an HTTP client")?,
        })
    }

    /// POSTs `body` with a fresh idempotency key (or `key`), returns sample and body.
    pub async fn post(
        &self,
        kind: &'static str,
        path: &str,
        body: &Value,
        key: Option<&str>,
        ack: Option<AckMode>,
    ) -> anyhow::Result<(Sample, Value)> {
        let mut request = Request::post(path, body.clone());
        if let Some(key) = key {
            request = request.with_key(key);
        }
        if let Some(ack) = ack {
            request = request.ack(ack);
        }
        self.send(kind, &request).await
    }

    pub async fn get(&self, kind: &'static str, path: &str) -> anyhow::Result<(Sample, Value)> {
        self.send(kind, &Request::get(path)).await
    }

    async fn send(&self, kind: &'static str, request: &Request) -> anyhow::Result<(Sample, Value)> {
        let reply =
            self.inner.send(request).await.map_err(|failure| {
                anyhow::anyhow!("{} {}: {failure:?}", self.region, request.path)
            })?;
        let answer = reply.answer;
        let sample = Sample {
            client_region: answer.served_by.unwrap_or_else(|| self.region.clone()),
            kind,
            status: answer.status,
            forwarded: answer.forwarded_to.is_some(),
            home: answer.home,
            replayed: answer.replayed,
            latency: reply.latency,
        };
        Ok((sample, answer.body))
    }
}

/// Opens `per_region` accounts homed in each region, through the first client, and
/// funds each with 1000.00.
pub async fn open_accounts(
    clients: &[Client],
    regions: &[String],
    per_region: usize,
) -> anyhow::Result<Vec<DemoAccount>> {
    let mut accounts = Vec::new();
    for (n, home) in regions.iter().enumerate() {
        for _ in 0..per_region {
            // Ask a client of another region, so account creation is forwarded too.
            let client = &clients[(n + 1) % clients.len()];
            let body = json!({"currency": "EUR", "home_region": home});
            let (sample, account) = client
                .post("open", "/v1/accounts", &body, None, None)
                .await?;
            anyhow::ensure!(sample.status == 201, "opening an account failed: {account}");
            let id = account["id"].as_str().context("account id")?.to_owned();
            let deposit = json!({"amount": "1000.00"});
            let (sample, body) = client
                .post(
                    "deposit",
                    &format!("/v1/accounts/{id}/deposits"),
                    &deposit,
                    None,
                    None,
                )
                .await?;
            anyhow::ensure!(sample.status == 201, "funding failed: {body}");
            accounts.push(DemoAccount {
                id,
                home: home.clone(),
            });
        }
    }
    Ok(accounts)
}

/// Runs one client per region for `duration`, each sending `rate` requests per second
/// (a mix of deposits, withdrawals and transfers over all accounts).
pub async fn run_traffic(
    clients: &[Client],
    accounts: &[DemoAccount],
    duration: Duration,
    rate: u32,
) -> Vec<Sample> {
    let tasks = clients.iter().cloned().map(|client| {
        let accounts = accounts.to_vec();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let pause = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
            let until = Instant::now() + duration;
            while Instant::now() < until {
                let (kind, path, body) = {
                    let mut rng = rand::rng();
                    let Some(account) = accounts.choose(&mut rng) else {
                        break;
                    };
                    let amount = format!(
                        "{}.{:02}",
                        rng.random_range(1..20),
                        rng.random_range(0..100)
                    );
                    match rng.random_range(0..10) {
                        0..=3 => (
                            "deposit",
                            format!("/v1/accounts/{}/deposits", account.id),
                            json!({"amount": amount}),
                        ),
                        4..=6 => (
                            "withdraw",
                            format!("/v1/accounts/{}/withdrawals", account.id),
                            json!({"amount": amount}),
                        ),
                        _ => {
                            let to = accounts
                                .choose(&mut rng)
                                .map_or(account.id.clone(), |a| a.id.clone());
                            (
                                "transfer",
                                "/v1/transfers".to_owned(),
                                json!({"from": account.id, "to": to, "amount": amount}),
                            )
                        }
                    }
                };
                if let Ok((sample, _)) = client.post(kind, &path, &body, None, None).await {
                    samples.push(sample);
                }
                tokio::time::sleep(pause).await;
            }
            samples
        })
    });
    let mut all = Vec::new();
    for task in futures::future::join_all(tasks).await {
        all.extend(task.unwrap_or_default());
    }
    all
}

/// Latency percentile in ms of `samples`.
pub fn percentile_ms(samples: &[&Sample], p: f64) -> f64 {
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    if ms.is_empty() {
        return 0.0;
    }
    ms.sort_by(f64::total_cmp);
    let index = ((ms.len() as f64 - 1.0) * p).round() as usize;
    ms[index.min(ms.len() - 1)]
}

/// The summary table: per serving region, requests direct at the home vs forwarded,
/// with latencies, and answers by status.
pub fn print_summary(samples: &[Sample]) {
    println!("\ndirect and forwarded: answered deposits and withdrawals (transfers counted in total only)");
    println!(
        "{:<10} {:>7} {:>7} {:>13} {:>13} {:>10} {:>13} {:>13}  statuses",
        "served by",
        "total",
        "direct",
        "direct p50",
        "direct p99",
        "forwarded",
        "fwd p50",
        "fwd p99"
    );
    let mut by_region: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        by_region
            .entry(&sample.client_region)
            .or_default()
            .push(sample);
    }
    for (region, list) in &by_region {
        // Latency compares like with like: deposits and withdrawals, one account each
        // (a transfer's cost depends on where its other account lives).
        let ok: Vec<&Sample> = list
            .iter()
            .copied()
            .filter(|s| s.status < 300 && matches!(s.kind, "deposit" | "withdraw"))
            .collect();
        let direct: Vec<&Sample> = ok.iter().copied().filter(|s| !s.forwarded).collect();
        let forwarded: Vec<&Sample> = ok.iter().copied().filter(|s| s.forwarded).collect();
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        for s in list {
            *statuses.entry(s.status).or_default() += 1;
        }
        println!(
            "{:<10} {:>7} {:>7} {:>10.1} ms {:>10.1} ms {:>10} {:>10.1} ms {:>10.1} ms  {:?}",
            region,
            list.len(),
            direct.len(),
            percentile_ms(&direct, 0.5),
            percentile_ms(&direct, 0.99),
            forwarded.len(),
            percentile_ms(&forwarded, 0.5),
            percentile_ms(&forwarded, 0.99),
            statuses
        );
    }
}

/// Replication lag each region's replicator reports (seconds behind each origin), and
/// the apply-delay histogram's mean.
pub async fn print_replication(deployment: &Deployment) {
    println!("\nreplication (per applying region)");
    for region in deployment.regions.iter().filter(|r| r.alive()) {
        let url = format!("http://{}/metrics", region.replicator_metrics);
        let Ok(text) = reqwest::get(&url).await else {
            continue;
        };
        let text = text.text().await.unwrap_or_default();
        let sum = crate::wait::sum_metric(&text, "ledger_replication_apply_delay_seconds_sum");
        let count = crate::wait::sum_metric(&text, "ledger_replication_apply_delay_seconds_count");
        let lag_events = crate::wait::sum_metric(&text, "ledger_replication_lag_events");
        let mean_ms = if count > 0.0 { sum / count * 1e3 } else { 0.0 };
        println!(
            "  {:<10} applied {:>7} events, mean commit-to-apply {:>7.1} ms, events behind now {}",
            region.name, count, mean_ms, lag_events
        );
    }
}
