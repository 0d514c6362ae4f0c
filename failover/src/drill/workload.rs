//! The drill's built-in workloads: accounts opened in every region, then, at a steady
//! rate from clients "near" random regions, one of three mixes ([`Mix`]): deposits and
//! withdrawals; only transfers between random pairs of accounts (the bank workload:
//! same-region and cross-region transfers, money only moves, so the total is fixed);
//! or everything, reads and opens included ([`super::mixed`]). A client whose
//! region does not answer goes to another one; a refused write (503) is retried with
//! the same Idempotency-Key after a short pause (a transfer at another region, as a
//! client of a global bank would). Every attempt is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_checker::history::{Operation, Outcome};
use ledger_wire::AccountId;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::mixed::{self, Sessions, Step, WriteSpec};

/// Pause before retrying a refused write.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// A write is given up after this long (and recorded as such).
const WRITE_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub rate_per_sec: u32,
    pub accounts_per_region: usize,
    pub ack_replicated: bool,
    pub concurrency: usize,
    pub mix: Mix,
}

/// What a workload sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Deposits and withdrawals.
    Payments,
    /// Only transfers between workload accounts (the bank workload): money only moves.
    Bank,
    /// Transfers, deposits, withdrawals, account opens, and reads with `min_seq` (the
    /// last seq this workload saw acknowledged for the account, read at any region)
    /// or `consistency=strong` (see [`super::reads`]).
    Mixed,
}

/// One HTTP attempt of one operation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attempt {
    /// Start and end, in ms since the workload's clock started.
    pub start_ms: u64,
    pub end_ms: u64,
    pub account: String,
    pub slot: u16,
    pub via: String,
    pub key: String,
    pub kind: &'static str,
    /// 0 when the region did not answer.
    pub status: u16,
    /// Problem type, or "unreachable".
    pub error: Option<String>,
    pub seq: Option<i64>,
    /// The epoch of the entry a 201 named: with `seq`, which entry acknowledged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// A transfer's destination account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The transfer id a 201 named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    /// A read's `min_seq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_seq: Option<i64>,
    /// A read with `consistency=strong`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strong: bool,
}

impl Attempt {
    /// Answered as asked: a write acknowledged (201), a read or an open answered.
    pub fn ok(&self) -> bool {
        match self.kind {
            "read" => self.status == 200,
            _ => self.status == 201,
        }
    }

    /// A write that moves money (what availability, recovery and RPO are about).
    pub fn is_write(&self) -> bool {
        matches!(self.kind, "deposit" | "withdrawal" | "transfer")
    }
}

/// The attempts as the checker's request history (one line each in `history.jsonl`).
pub fn operations(attempts: &[Attempt], replicated: bool) -> Vec<Operation> {
    attempts
        .iter()
        .map(|a| Operation {
            op: a.kind.to_owned(),
            key: a.key.clone(),
            account: a.account.clone(),
            to: a.to.clone(),
            region: a.via.clone(),
            invoke_ms: a.start_ms,
            complete_ms: a.end_ms,
            outcome: Outcome::of_status(a.status),
            status: a.status,
            error: a.error.clone(),
            seq: a.seq,
            epoch: a.epoch,
            replicated,
            min_seq: a.min_seq,
            strong: a.strong,
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub slot: u16,
    pub home: String,
}

pub struct Workload {
    pub clock: Instant,
    pub accounts: Vec<Account>,
    records: Arc<Mutex<Vec<Attempt>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    pub fn elapsed_ms(&self) -> u64 {
        ms(self.clock.elapsed())
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops sending and waits for writes in flight to finish.
    pub async fn stop(self) -> Vec<Attempt> {
        self.stop.cancel();
        let _ = self.task.await;
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The funding of every workload account, unless a drill says otherwise.
pub const DEFAULT_FUNDING: &str = "1000.00";

/// Opens `per_region` EUR accounts homed in each region, each funded with `funding`.
pub async fn open_accounts(
    http: &reqwest::Client,
    nodes: &BTreeMap<String, String>,
    per_region: usize,
    funding: &str,
) -> anyhow::Result<Vec<Account>> {
    let mut accounts = Vec::new();
    for (region, url) in nodes {
        for _ in 0..per_region {
            let opened: Value = post(
                http,
                url,
                "/v1/accounts",
                &json!({"currency": "EUR", "home_region": region}),
                &uuid::Uuid::new_v4().to_string(),
                false,
            )
            .await
            .and_then(|(status, body)| {
                if status == 201 {
                    Ok(body)
                } else {
                    anyhow::bail!("open in {region}: {status} {body}")
                }
            })?;
            let id = opened["id"].as_str().unwrap_or_default().to_owned();
            let account: AccountId = id
                .parse()
                .map_err(|e| anyhow::anyhow!("account id {id}: {e}"))?;
            let (status, body) = post(
                http,
                url,
                &format!("/v1/accounts/{id}/deposits"),
                &json!({ "amount": funding }),
                &uuid::Uuid::new_v4().to_string(),
                false,
            )
            .await?;
            anyhow::ensure!(status == 201, "fund {id}: {status} {body}");
            accounts.push(Account {
                id,
                slot: account.slot(),
                home: region.clone(),
            });
        }
    }
    Ok(accounts)
}

pub(super) async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
    key: &str,
    replicated: bool,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http
        .post(format!("{base}{path}"))
        .header("idempotency-key", key)
        .json(body);
    if replicated {
        request = request.header("ack", "replicated");
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// An HTTP client for the public API that sends `api_key` (when the deployment uses
/// keys) as `Authorization: Bearer` on every request.
pub fn api_client(api_key: Option<&str>, builder: reqwest::ClientBuilder) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = api_key
        .and_then(|key| reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).ok())
    {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    builder.default_headers(headers).build().unwrap_or_default()
}

/// Starts sending writes to `accounts` through `nodes` until stopped.
pub fn start(
    nodes: BTreeMap<String, String>,
    accounts: Vec<Account>,
    options: WorkloadOptions,
    api_key: Option<&str>,
) -> Workload {
    let records = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let clock = Instant::now();
    let http = api_client(
        api_key,
        reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(6))
            .tcp_nodelay(true),
    );
    let task = tokio::spawn(run(
        http,
        Arc::new(nodes),
        Arc::new(accounts.clone()),
        options,
        clock,
        records.clone(),
        stop.clone(),
    ));
    Workload {
        clock,
        accounts,
        records,
        stop,
        task,
    }
}

async fn run(
    http: reqwest::Client,
    nodes: Arc<BTreeMap<String, String>>,
    accounts: Arc<Vec<Account>>,
    options: WorkloadOptions,
    clock: Instant,
    records: Arc<Mutex<Vec<Attempt>>>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let period = Duration::from_secs_f64(1.0 / f64::from(options.rate_per_sec.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    let regions: Vec<String> = nodes.keys().cloned().collect();
    let sessions = Sessions::default();
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let step = {
            let mut rng = rand::rng();
            mixed::draw(&mut rng, options.mix, &accounts, &regions, &sessions)
        };
        let Some(step) = step else {
            break;
        };
        match step {
            Step::Write(spec) => {
                let write = Write {
                    http: http.clone(),
                    nodes: nodes.clone(),
                    regions: regions.clone(),
                    spec,
                    key: uuid::Uuid::new_v4().to_string(),
                    replicated: options.ack_replicated,
                    clock,
                    records: records.clone(),
                    sessions: sessions.clone(),
                };
                tasks.spawn(async move {
                    write.run().await;
                    drop(permit);
                });
            }
            Step::Once(once) => {
                let call = mixed::Call {
                    http: http.clone(),
                    nodes: nodes.clone(),
                    clock,
                    records: records.clone(),
                };
                tasks.spawn(async move {
                    call.run(once).await;
                    drop(permit);
                });
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

struct Write {
    http: reqwest::Client,
    nodes: Arc<BTreeMap<String, String>>,
    regions: Vec<String>,
    spec: WriteSpec,
    key: String,
    replicated: bool,
    clock: Instant,
    records: Arc<Mutex<Vec<Attempt>>>,
    sessions: Sessions,
}

impl Write {
    /// Sends until answered 201 or 4xx, or the deadline passes.
    async fn run(self) {
        let first = Instant::now();
        let mut via = self.spec.via.clone();
        loop {
            let start = self.clock.elapsed();
            let base = self.nodes.get(&via).cloned().unwrap_or_default();
            let answer = post(
                &self.http,
                &base,
                &self.spec.path,
                &self.spec.body,
                &self.key,
                self.replicated,
            )
            .await;
            let end = self.clock.elapsed();
            let (status, error, seq, epoch, transfer_id) = match &answer {
                Ok((status, body)) if *status == 201 => (
                    *status,
                    None,
                    body["seq"].as_i64(),
                    body["epoch"].as_i64(),
                    body["id"].as_str().map(str::to_owned),
                ),
                Ok((status, body)) => (
                    *status,
                    Some(body["type"].as_str().map_or_else(
                        || format!("http-{status}"),
                        |t| t.rsplit('/').next().unwrap_or(t).to_owned(),
                    )),
                    None,
                    None,
                    None,
                ),
                Err(_) => (0, Some("unreachable".to_owned()), None, None, None),
            };
            let attempt = Attempt {
                start_ms: ms(start),
                end_ms: ms(end),
                account: self.spec.account.id.clone(),
                slot: self.spec.account.slot,
                via: via.clone(),
                key: self.key.clone(),
                kind: self.spec.kind,
                status,
                error,
                seq,
                epoch,
                to: self.spec.to.clone(),
                transfer_id,
                ..Attempt::default()
            };
            if let Some(seq) = attempt.seq {
                self.sessions.saw(&attempt.account, seq);
            }
            if let Ok(mut records) = self.records.lock() {
                records.push(attempt);
            }
            let retry = status == 0 || status >= 500;
            if !retry || first.elapsed() > WRITE_DEADLINE {
                return;
            }
            if status == 0 || (self.spec.to.is_some() && (status == 503 || status == 504)) {
                // A client whose nearest region is gone (or, for a transfer, refused or
                // timed out) is routed to another one, with the same key.
                let others: Vec<&String> = self.regions.iter().filter(|r| **r != via).collect();
                if let Some(next) = others.get(rand::rng().random_range(0..others.len().max(1))) {
                    via = (*next).clone();
                }
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
