//! The drill's built-in workloads: accounts opened in every region, then, at a steady
//! rate from clients "near" random regions, one of three mixes ([`Mix`]): deposits and
//! withdrawals; only transfers between random pairs of accounts (the bank workload:
//! same-region and cross-region transfers, money only moves, so the total is fixed);
//! or everything, reads and opens included ([`super::mixed`]). A client whose
//! region does not answer goes to another one; a refused write (503) is retried with
//! the same Idempotency-Key after a short pause (a transfer at another region, as a
//! client of a global bank would). Every attempt is recorded, so each goes to one
//! region through `ledger-client`'s pinned [`RegionClient`] and the drill, not the
//! client, picks the next region.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_checker::history::{Operation, Outcome};
use ledger_client::{HttpTransport, RawAnswer, RegionClient, Request, TransportFailure};
use ledger_wire::api_schema::AckMode;
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

/// One client per region (name to public URL), sharing one connection pool.
pub type RegionClients = BTreeMap<String, RegionClient>;

/// Clients of `nodes`' regions: `api_key` (when the deployment uses keys) as
/// `Authorization: Bearer`; a connection not made in `connect_timeout` and an attempt
/// not answered in `timeout` fail.
pub fn region_clients(
    nodes: &BTreeMap<String, String>,
    api_key: Option<&str>,
    connect_timeout: Duration,
    timeout: Duration,
) -> anyhow::Result<RegionClients> {
    let transport =
        HttpTransport::with_connect_timeout(api_key.map(str::to_owned), connect_timeout)
            .context("build the HTTP client")?;
    Ok(nodes
        .iter()
        .map(|(region, url)| {
            let client = RegionClient::new(transport.clone(), region, url, timeout);
            (region.clone(), client)
        })
        .collect())
}

/// Opens `per_region` EUR accounts homed in each of `nodes`' regions (opened there),
/// each funded with `funding`.
pub async fn open_accounts(
    nodes: &BTreeMap<String, String>,
    api_key: Option<&str>,
    per_region: usize,
    funding: &str,
) -> anyhow::Result<Vec<Account>> {
    let clients = region_clients(
        nodes,
        api_key,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )?;
    let mut accounts = Vec::new();
    for (region, client) in &clients {
        for _ in 0..per_region {
            let opened: Value = post(
                client,
                "/v1/accounts",
                &json!({"currency": "EUR", "home_region": region}),
                &uuid::Uuid::new_v4().to_string(),
                false,
            )
            .await
            .map_err(|failure| anyhow::anyhow!("open in {region}: {failure:?}"))
            .and_then(|answer| {
                if answer.status == 201 {
                    Ok(answer.body)
                } else {
                    anyhow::bail!("open in {region}: {} {}", answer.status, answer.body)
                }
            })?;
            let id = opened["id"].as_str().unwrap_or_default().to_owned();
            let account: AccountId = id
                .parse()
                .map_err(|e| anyhow::anyhow!("account id {id}: {e}"))?;
            let funded = post(
                client,
                &format!("/v1/accounts/{id}/deposits"),
                &json!({ "amount": funding }),
                &uuid::Uuid::new_v4().to_string(),
                false,
            )
            .await
            .map_err(|failure| anyhow::anyhow!("fund {id}: {failure:?}"))?;
            anyhow::ensure!(
                funded.status == 201,
                "fund {id}: {} {}",
                funded.status,
                funded.body
            );
            accounts.push(Account {
                id,
                slot: account.slot(),
                home: region.clone(),
            });
        }
    }
    Ok(accounts)
}

/// One POST to one region, answered as the region answered it.
pub(super) async fn post(
    client: &RegionClient,
    path: &str,
    body: &Value,
    key: &str,
    replicated: bool,
) -> Result<RawAnswer, TransportFailure> {
    let mut request = Request::post(path, body.clone()).with_key(key);
    if replicated {
        request = request.ack(AckMode::Replicated);
    }
    Ok(client.send(&request).await?.answer)
}

/// Starts sending writes to `accounts` through `nodes` until stopped.
pub fn start(
    nodes: BTreeMap<String, String>,
    accounts: Vec<Account>,
    options: WorkloadOptions,
    api_key: Option<&str>,
) -> anyhow::Result<Workload> {
    let records = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let clock = Instant::now();
    // A dead region is told in 300 ms; a write unanswered for 6 s is recorded as such.
    let clients = region_clients(
        &nodes,
        api_key,
        Duration::from_millis(300),
        Duration::from_secs(6),
    )?;
    let task = tokio::spawn(run(
        Arc::new(clients),
        Arc::new(accounts.clone()),
        options,
        clock,
        records.clone(),
        stop.clone(),
    ));
    Ok(Workload {
        clock,
        accounts,
        records,
        stop,
        task,
    })
}

async fn run(
    clients: Arc<RegionClients>,
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
    let regions: Vec<String> = clients.keys().cloned().collect();
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
                    clients: clients.clone(),
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
                    clients: clients.clone(),
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
    clients: Arc<RegionClients>,
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
            let answer = match self.clients.get(&via) {
                Some(client) => {
                    post(
                        client,
                        &self.spec.path,
                        &self.spec.body,
                        &self.key,
                        self.replicated,
                    )
                    .await
                }
                None => Err(TransportFailure::Connect(format!("no region {via}"))),
            };
            let end = self.clock.elapsed();
            let (status, error, seq, epoch, transfer_id) = match &answer {
                Ok(answer) if answer.status == 201 => (
                    answer.status,
                    None,
                    answer.body["seq"].as_i64(),
                    answer.body["epoch"].as_i64(),
                    answer.body["id"].as_str().map(str::to_owned),
                ),
                Ok(answer) => (answer.status, Some(answer.problem()), None, None, None),
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
