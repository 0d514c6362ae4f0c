//! Two real regions for replication tests: each with its own PostgreSQL, region node and
//! Tansu broker; `ledger-replicator` processes (relay of A, applier of B reading A) that
//! tests kill and restart by pid; a workload; and convergence checks.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use harness::node::wait_http_ready;
use harness::{free_port, wait_until, Broker, ChildGuard, WorkDir};
use ledger_tests::{ApiClient, TestRegion};
use ledger_wire::AccountId;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

pub const A: &str = "a";
pub const B: &str = "b";
/// Region A's nodes write at this epoch, so tests can forge events of older owners.
pub const A_EPOCH: i64 = 5;

pub fn replicator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ledger-replicator"))
}

/// A replicator process and the port of its metrics endpoint.
pub struct Replicator {
    pub process: ChildGuard,
    pub port: u16,
}

impl Replicator {
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        metric(self.port, name).await
    }
}

/// Sum of the samples of `name` (any labels) on the metrics page at `port`.
pub async fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    let page = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .context("fetch metrics")?
        .text()
        .await
        .context("read metrics")?;
    Ok(page
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

pub struct TwoRegions {
    pub a: TestRegion,
    pub b: TestRegion,
    pub broker_a: Broker,
    pub broker_b: Broker,
    pub dir: WorkDir,
    serial: AtomicU64,
}

impl TwoRegions {
    pub async fn start(label: &str) -> anyhow::Result<TwoRegions> {
        TwoRegions::start_maintained(label, harness::broker::MAINTENANCE_INTERVAL).await
    }

    /// Two regions whose brokers run their retention pass every `maintenance`.
    pub async fn start_maintained(
        label: &str,
        maintenance: Duration,
    ) -> anyhow::Result<TwoRegions> {
        let dir = WorkDir::temp(label).context("make test dir")?;
        let (label_a, label_b) = (format!("{label}-a"), format!("{label}-b"));
        let (a, b) = tokio::try_join!(
            TestRegion::start_with(&label_a, |c| {
                c.region = A.into();
                c.static_epoch = A_EPOCH;
            }),
            TestRegion::start_with(&label_b, |c| c.region = B.into()),
        )?;
        let broker_a = Broker::start_maintained(&dir.join("broker-a"), true, maintenance)
            .await
            .context("start broker a")?;
        let broker_b = Broker::start_maintained(&dir.join("broker-b"), true, maintenance)
            .await
            .context("start broker b")?;
        Ok(TwoRegions {
            a,
            b,
            broker_a,
            broker_b,
            dir,
            serial: AtomicU64::new(0),
        })
    }

    fn command(&self, region: &TestRegion, name: &str, brokers: &str, port: u16) -> Command {
        let mut command = Command::new(replicator_bin());
        command
            .env("LEDGER_REGION", name)
            .env("LEDGER_DATABASE_URL", &region.database_url)
            .env("LEDGER_BROKERS", brokers)
            .env("LEDGER_REPLICATOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("LEDGER_TOPIC_PARTITIONS", "3")
            .env("LEDGER_SHUTDOWN_GRACE_MS", "2000")
            .env("LEDGER_LOG", "info");
        command
    }

    async fn spawn(
        &self,
        what: &str,
        mut command: Command,
        port: u16,
    ) -> anyhow::Result<Replicator> {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.join(&format!("{what}-{n}.log"));
        command.env("LEDGER_REPLICATOR_LISTEN", format!("127.0.0.1:{port}"));
        let mut process = ChildGuard::spawn(what, command, &log, Signal::SIGTERM)?;
        wait_http_ready(
            &mut process,
            &format!("http://127.0.0.1:{port}/readyz"),
            Duration::from_secs(30),
        )
        .await?;
        Ok(Replicator { process, port })
    }

    /// A relay for region A (publishing to A's broker), no appliers.
    pub async fn relay_a(&self) -> anyhow::Result<Replicator> {
        self.relay_a_with(&[]).await
    }

    /// A relay for region A with extra environment settings.
    pub async fn relay_a_with(&self, env: &[(&str, &str)]) -> anyhow::Result<Replicator> {
        let port = free_port()?;
        let mut command = self.command(&self.a, A, &self.broker_a.addr(), port);
        command.envs(env.iter().copied());
        self.spawn("relay-a", command, port).await
    }

    /// B's applier of A's events (no relay).
    pub async fn applier_b(&self) -> anyhow::Result<Replicator> {
        self.applier_b_with(&[]).await
    }

    /// B's applier of A's events with extra environment settings.
    pub async fn applier_b_with(&self, env: &[(&str, &str)]) -> anyhow::Result<Replicator> {
        let port = free_port()?;
        let mut command = self.command(&self.b, B, &self.broker_b.addr(), port);
        command
            .env("LEDGER_RELAY", "false")
            .env("LEDGER_APPLY_FROM", format!("{A}={}", self.broker_a.addr()))
            .envs(env.iter().copied());
        self.spawn("applier-b", command, port).await
    }

    /// Waits until B's replica of A's accounts and entries equals A's, row for row.
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<()> {
        let (a, b) = (self.a.db().await?, self.b.db().await?);
        let converged = wait_until(timeout, Duration::from_millis(100), || async {
            let (left, right) = (dump(&a).await.ok()?, dump(&b).await.ok()?);
            (left == right).then_some(())
        })
        .await;
        if converged.is_none() {
            let (left, right) = (dump(&a).await?, dump(&b).await?);
            let gap = gap_report(&a, &b, &self.broker_a.addr())
                .await
                .unwrap_or_else(|e| format!("gap report failed: {e:#}"));
            anyhow::bail!(
                "B did not converge to A within {timeout:?}: A has {} rows, B {}; first difference: {:?}\n{gap}",
                left.len(),
                right.len(),
                left.iter().zip(&right).find(|(l, r)| l != r)
            );
        }
        Ok(())
    }
}

/// Where the first event B waits for is: A's outbox row, A's topic, B's positions. A
/// failed convergence then names the layer that lost it.
pub async fn gap_report(a: &Client, b: &Client, brokers: &str) -> anyhow::Result<String> {
    let waiting = b
        .query_opt(
            "SELECT p.account_id, acc.seq + 1, count(*)
             FROM ledger.pending_events p JOIN ledger.accounts acc ON acc.id = p.account_id
             WHERE p.origin_region = 'a' GROUP BY p.account_id, acc.seq ORDER BY 1 LIMIT 1",
            &[],
        )
        .await
        .context("read B's pending events")?;
    let Some(waiting) = waiting else {
        return Ok("B has no pending events of A".into());
    };
    let (account, seq, pending): (i64, i64, i64) = (waiting.get(0), waiting.get(1), waiting.get(2));
    let outbox = a
        .query_opt(
            "SELECT id, event_id, published_at IS NOT NULL FROM ledger.outbox
             WHERE account_id = $1 AND seq = $2",
            &[&account, &seq],
        )
        .await
        .context("read A's outbox")?;
    let Some(outbox) = outbox else {
        return Ok(format!(
            "account {account} waits for seq {seq} ({pending} pending), not in A's outbox"
        ));
    };
    let (outbox_id, event_id, published): (i64, uuid::Uuid, bool) =
        (outbox.get(0), outbox.get(1), outbox.get(2));
    let positions: Vec<String> = b
        .query(
            "SELECT format('%s@%s', partition, next_offset) FROM ledger.replication_positions
             ORDER BY partition",
            &[],
        )
        .await
        .context("read B's positions")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let brokers = brokers.to_owned();
    let id = event_id.to_string();
    let in_topic = tokio::task::spawn_blocking(move || find_in_topic(&brokers, &id))
        .await
        .context("join topic scan")??;
    Ok(format!(
        "account {account} waits for seq {seq} ({pending} pending): A's outbox row {outbox_id} \
         (event {event_id}, published: {published}); in A's topic: {in_topic}; B's positions: {positions:?}"
    ))
}

/// Scans every partition of A's topic from the start for a message whose payload names
/// `event_id`: its partition and offset, or what was scanned.
fn find_in_topic(brokers: &str, event_id: &str) -> anyhow::Result<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("gap-report-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .context("create gap report consumer")?;
    consumer
        .subscribe(&[&ledger_wire::events::events_topic(A)])
        .context("subscribe")?;
    let (mut scanned, mut quiet) = (0, 0);
    while quiet < 15 {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                quiet = 0;
                scanned += 1;
                let payload = String::from_utf8_lossy(message.payload().unwrap_or_default());
                if payload.contains(event_id) {
                    return Ok(format!(
                        "partition {} offset {}",
                        message.partition(),
                        message.offset()
                    ));
                }
            }
            _ => quiet += 1,
        }
    }
    Ok(format!("absent ({scanned} messages scanned)"))
}

/// Every account row and entry of region A's accounts, as comparable text.
pub async fn dump(db: &Client) -> anyhow::Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT format('account %s %s %s seq %s epoch %s %s', id, currency, balance, seq,
                           epoch, opened_event_id)
             FROM ledger.accounts WHERE home_region = 'a'
             UNION ALL
             SELECT format('entry %s/%s epoch %s %s %s %s %s %s', account_id, seq, epoch,
                           kind, amount, balance, txn_id, event_id)
             FROM ledger.entries WHERE origin_region = 'a'
             ORDER BY 1",
            &[],
        )
        .await
        .context("dump ledger")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Opens `count` EUR accounts at `api`, each funded with 100.00.
pub async fn open_accounts(api: &ApiClient, count: usize) -> anyhow::Result<Vec<AccountId>> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let account = api.open_account("EUR").await?;
        api.fund(account.id, "100.00").await?;
        ids.push(account.id);
    }
    Ok(ids)
}

/// Runs `writes` writes from 4 concurrent clients over `accounts` (deposits,
/// withdrawals, transfers between them); every answer must be 201 or 409.
pub fn spawn_writes(
    api: ApiClient,
    accounts: Vec<AccountId>,
    writes: usize,
) -> JoinHandle<anyhow::Result<usize>> {
    tokio::spawn(async move {
        let accounts = Arc::new(accounts);
        let mut clients = Vec::new();
        for client in 0..4 {
            let (api, accounts) = (api.clone(), accounts.clone());
            clients.push(tokio::spawn(async move {
                let mut done = 0;
                for i in (client..writes).step_by(4) {
                    let account = accounts[i % accounts.len()];
                    let other = accounts[(i * 7 + 3) % accounts.len()];
                    let key = uuid::Uuid::new_v4().to_string();
                    let reply = match i % 3 {
                        0 => api.deposit(account, "1.25", &key).await?,
                        1 => api.withdraw(account, "0.75", &key).await?,
                        _ if other != account => api.transfer(account, other, "0.50", &key).await?,
                        _ => api.deposit(account, "0.10", &key).await?,
                    };
                    anyhow::ensure!(
                        reply.status == StatusCode::CREATED || reply.status == StatusCode::CONFLICT,
                        "write {i}: {reply:?}"
                    );
                    done += 1;
                }
                Ok::<_, anyhow::Error>(done)
            }));
        }
        let mut total = 0;
        for client in clients {
            total += client.await.context("join writer")??;
        }
        Ok(total)
    })
}

/// Waits until `db` says `sql` (one bigint) reaches `at_least`.
pub async fn wait_count(
    db: &Client,
    sql: &str,
    at_least: i64,
    timeout: Duration,
) -> anyhow::Result<i64> {
    let reached = wait_until(timeout, Duration::from_millis(20), || async {
        let count: i64 = db.query_one(sql, &[]).await.ok()?.get(0);
        (count >= at_least).then_some(count)
    })
    .await;
    reached.with_context(|| format!("{sql} did not reach {at_least} within {timeout:?}"))
}
