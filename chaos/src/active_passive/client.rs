//! One location's client of the active-passive database (run inside its region's
//! namespace, like `locations`' clients): half reads, half 1.00 deposits, by the same
//! SQL the region node runs. Writes go to the server that accepts them, in the manner
//! of libpq's host list with `target_session_attrs=read-write`: on a lost connection
//! or a read-only refusal the next server is tried, under the same idempotency key,
//! within the same 5 s budget as `ledger-client`. Reads go to the nearer copy
//! (measured at the start), the other one if it fails. One JSON sample per line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::NoTls;

use crate::locations::{epoch_ms, open_loop, LocationSample};

/// The same total budget as `ledger_client::RetryConfig::default()`.
const BUDGET: Duration = Duration::from_secs(5);
const PAUSE: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// PostgreSQL's "cannot execute ... in a read-only transaction".
const READ_ONLY: &str = "25006";

const DEPOSIT_SQL: &str =
    "SELECT status, body::text FROM ledger.post_entry($1, $2, 'deposit', $3, \
     $4::text::numeric, NULL, 1, 'active-passive', NULL)";
const ACCOUNT_SQL: &str =
    "SELECT ledger.account_json(a)::text FROM ledger.accounts a WHERE a.id = $1";

/// A server (`region=host:port`) and, once opened, the connection to it with its
/// statements prepared (as the node's pool keeps them: one round trip a query).
struct Target {
    region: String,
    host: String,
    port: u16,
    /// Shared by every request in flight (tokio-postgres pipelines them).
    connection: tokio::sync::Mutex<Option<Arc<Prepared>>>,
}

struct Prepared {
    client: tokio_postgres::Client,
    deposit: tokio_postgres::Statement,
    account: tokio_postgres::Statement,
}

impl Target {
    fn parse(spec: &str) -> anyhow::Result<Target> {
        let (region, address) = spec
            .split_once('=')
            .with_context(|| format!("{spec:?} is not region=host:port"))?;
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("{address:?} is not host:port"))?;
        Ok(Target {
            region: region.to_owned(),
            host: host.to_owned(),
            port: port.parse().with_context(|| format!("port of {spec:?}"))?,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// The open connection, opened now if needed.
    async fn client(&self) -> anyhow::Result<Arc<Prepared>> {
        let mut held = self.connection.lock().await;
        if held.as_ref().is_none_or(|c| c.client.is_closed()) {
            let mut config = tokio_postgres::Config::new();
            config
                .host(&self.host)
                .port(self.port)
                .user(harness::pg::SUPERUSER)
                .dbname("ledger")
                .connect_timeout(CONNECT_TIMEOUT);
            let (client, connection) = config
                .connect(NoTls)
                .await
                .with_context(|| format!("connect to {}", self.region))?;
            tokio::spawn(connection);
            let deposit = client.prepare(DEPOSIT_SQL).await?;
            let account = client.prepare(ACCOUNT_SQL).await?;
            *held = Some(Arc::new(Prepared {
                client,
                deposit,
                account,
            }));
        }
        held.clone().context("no connection")
    }

    /// Drops the connection after a failure: the next request opens a new one.
    async fn forget(&self) {
        *self.connection.lock().await = None;
    }

    /// Median of three `SELECT 1` round trips (a failure counts as very far).
    async fn distance(&self) -> Duration {
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let ok = match self.client().await {
                Ok(prepared) => prepared.client.simple_query("SELECT 1").await.is_ok(),
                Err(_) => false,
            };
            times.push(if ok { started.elapsed() } else { Duration::MAX });
        }
        times.sort();
        times[1]
    }
}

/// What one attempt came to.
enum Attempt {
    Done {
        status: u16,
        body: String,
    },
    /// This server cannot take it now (gone, read-only, too slow): try the next.
    Next(String),
}

/// What every request of a location shares.
struct Shared {
    targets: Vec<Target>,
    /// The server that took the last write: where the next one starts.
    writer: AtomicUsize,
    /// The nearer copy, for reads.
    reader: usize,
}

/// Runs the client: `servers[0]` the primary, then the standby. One request every
/// 1/`rate` s, each on its own task (open loop, as `locations`' clients): half reads
/// of any of `reads`, half deposits to one of `writes`.
pub async fn run_client(
    servers: &[String],
    reads: &[i64],
    writes: &[i64],
    duration: Duration,
    rate: u32,
) -> anyhow::Result<()> {
    let targets = servers
        .iter()
        .map(|s| Target::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!targets.is_empty(), "no servers given");
    let mut reader = 0;
    let mut nearest = Duration::MAX;
    for (i, target) in targets.iter().enumerate() {
        let distance = target.distance().await;
        if distance < nearest {
            (reader, nearest) = (i, distance);
        }
    }
    let shared = Arc::new(Shared {
        targets,
        writer: AtomicUsize::new(0),
        reader,
    });
    let pause = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let until = Instant::now() + duration;
    open_loop(reads, writes, pause, until, |write, account| {
        one_request(Arc::clone(&shared), write, account)
    })
    .await
}

async fn one_request(shared: Arc<Shared>, write: bool, account: i64) -> anyhow::Result<()> {
    let targets = &shared.targets;
    let sent_ms = epoch_ms();
    let started = Instant::now();
    let key = uuid::Uuid::new_v4().to_string();
    let mut attempts = 0;
    let mut last_error = String::new();
    let mut answer = None;
    // Writes start at the server that took the last one; reads at the nearer copy.
    let mut at = if write {
        shared.writer.load(Ordering::Relaxed)
    } else {
        shared.reader
    };
    while started.elapsed() < BUDGET {
        attempts += 1;
        let target = &targets[at];
        let attempt = if write {
            deposit(target, &key, account).await
        } else {
            read(target, account).await
        };
        match attempt {
            Attempt::Done { status, body } => {
                answer = Some((at, status, body));
                break;
            }
            Attempt::Next(error) => {
                last_error = format!("{}: {error}", target.region);
                at = (at + 1) % targets.len();
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
    if let (true, Some((at, _, _))) = (write, &answer) {
        shared.writer.store(*at, Ordering::Relaxed);
    }
    let sample = LocationSample {
        sent_ms,
        write,
        account: Some(account.to_string()),
        ok: answer.as_ref().is_some_and(|(_, status, _)| *status < 300),
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
        region: answer
            .as_ref()
            .map(|(at, _, _)| targets[*at].region.clone()),
        attempts,
        status: answer.as_ref().map(|(_, status, _)| *status),
        error: match &answer {
            Some((_, status, _)) if *status < 300 => None,
            Some((_, _, body)) => Some(body.clone()),
            None => Some(format!(
                "no server took it within {BUDGET:?} ({attempts} attempts; last: {last_error})"
            )),
        },
    };
    println!("{}", serde_json::to_string(&sample)?);
    Ok(())
}

async fn deposit(target: &Target, key: &str, account: i64) -> Attempt {
    let fingerprint: Vec<u8> = vec![0xab; 32];
    let amount = "1.00";
    let prepared = match target.client().await {
        Ok(prepared) => prepared,
        Err(e) => return Attempt::Next(format!("{e:#}")),
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&key, &fingerprint, &account, &amount];
    let query = prepared.client.query_one(&prepared.deposit, &params);
    match answered(target, query).await {
        Ok(row) => Attempt::Done {
            status: u16::try_from(row.get::<_, i32>(0)).unwrap_or(500),
            body: row.get(1),
        },
        Err(next) => next,
    }
}

async fn read(target: &Target, account: i64) -> Attempt {
    let prepared = match target.client().await {
        Ok(prepared) => prepared,
        Err(e) => return Attempt::Next(format!("{e:#}")),
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&account];
    let query = prepared.client.query_opt(&prepared.account, &params);
    match answered(target, query).await {
        Ok(Some(row)) => Attempt::Done {
            status: 200,
            body: row.get(0),
        },
        Ok(None) => Attempt::Done {
            status: 404,
            body: String::new(),
        },
        Err(next) => next,
    }
}

/// The query's result within [`QUERY_TIMEOUT`], or why to try the next server: a
/// standby refusing a write keeps its connection; any other failure drops it.
async fn answered<T>(
    target: &Target,
    query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Attempt> {
    let why = match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(Ok(result)) => return Ok(result),
        Ok(Err(e)) if e.code().is_some_and(|c| c.code() == READ_ONLY) => {
            return Err(Attempt::Next("read-only (a standby)".to_owned()))
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {QUERY_TIMEOUT:?}"),
    };
    target.forget().await;
    Err(Attempt::Next(why))
}
