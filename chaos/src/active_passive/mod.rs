//! The usual alternative measured beside ours, under the same geography: one
//! PostgreSQL primary with a streaming standby, asynchronous or synchronous
//! ([`cluster`]), against the
//! deployment's regions, each with a client next to every region ([`client`] for the
//! alternative, `locations` for ours), the same ledger work (half reads, half 1.00
//! deposits), and the primary's region lost halfway.
//!
//! Both sides fail over the same way: a controller probes the lost side every
//! [`PROBE_EVERY`] and acts after [`PROBES_TO_DECIDE`] failures in a row: for the
//! alternative it promotes the standby (`pg_promote`), for ours it runs `failover
//! promote` (lease fencing included). RTO per location is the time from the kill to
//! the location's first acknowledged write (to any account, and to an account that
//! lived in the lost region); RPO is the acknowledged deposits the survivors do not
//! show once settled.

pub mod client;
pub mod cluster;
mod figures;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

pub use cluster::{ActivePassive, Replication};
pub use figures::{print_comparison, Side};

use crate::locations::{client_process, collect_samples, epoch_ms, LocationsRun};
use crate::Deployment;

pub const PROBE_EVERY: Duration = Duration::from_millis(500);
pub const PROBES_TO_DECIDE: u32 = 3;

/// Accounts of the alternative per location: as many as ours opens per region.
const ACCOUNTS_PER_LOCATION: usize = 2;

/// When the controller decided the lost side was dead and when its promote finished,
/// ms since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Promotion {
    pub decided_ms: u64,
    pub promoted_ms: u64,
}

/// Waits (from `start_ms`) until `alive` fails [`PROBES_TO_DECIDE`] times in a row, then
/// runs `promote`; `None` if the side never died within `give_up`.
async fn promote_when_dead<A, AF, P, PF>(
    give_up: Duration,
    mut alive: A,
    promote: P,
) -> anyhow::Result<Option<Promotion>>
where
    A: FnMut() -> AF,
    AF: std::future::Future<Output = bool>,
    P: FnOnce() -> PF,
    PF: std::future::Future<Output = anyhow::Result<()>>,
{
    let until = tokio::time::Instant::now() + give_up;
    let mut failures = 0;
    while failures < PROBES_TO_DECIDE {
        if tokio::time::Instant::now() > until {
            return Ok(None);
        }
        let probe_started = tokio::time::Instant::now();
        failures = if alive().await { 0 } else { failures + 1 };
        tokio::time::sleep_until(probe_started + PROBE_EVERY).await;
    }
    let decided_ms = epoch_ms();
    promote().await?;
    Ok(Some(Promotion {
        decided_ms,
        promoted_ms: epoch_ms(),
    }))
}

/// The alternative's run: its servers, a client next to every region for `seconds`,
/// the primary killed halfway, the standby promoted by the controller.
pub async fn run_alternative(
    deployment: &Deployment,
    seconds: u64,
    rate: u32,
    replication: Replication,
) -> anyhow::Result<Side> {
    let dir = deployment.data_dir.join("active-passive");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    let count = deployment.regions.len() * ACCOUNTS_PER_LOCATION;
    let accounts = cluster::account_ids(i64::try_from(count).context("account count")?);
    let servers = ActivePassive::start(deployment, &dir, &accounts, replication).await?;
    let side = drive_alternative(deployment, &servers, &accounts, seconds, rate).await;
    let side = side.map(|side| Side {
        description: replication.describe(),
        ..side
    });
    servers.stop();
    side
}

async fn drive_alternative(
    deployment: &Deployment,
    servers: &ActivePassive,
    accounts: &[i64],
    seconds: u64,
    rate: u32,
) -> anyhow::Result<Side> {
    let bin = deployment.bin_dir.join("active-passive-client");
    let specs = [servers.primary.spec(), servers.standby.spec()].join(",");
    let ids: Vec<String> = accounts.iter().map(i64::to_string).collect();
    let mut children = Vec::new();
    for (i, region) in deployment.regions.iter().enumerate() {
        let namespace = deployment.network.namespace(i).context("namespace")?;
        // The location's own accounts, as many as ours opens per region.
        let own: Vec<String> = ids
            .iter()
            .skip(i * ACCOUNTS_PER_LOCATION)
            .take(ACCOUNTS_PER_LOCATION)
            .cloned()
            .collect();
        let child = client_process(&namespace, &bin, &[], seconds, rate)
            .args(["--servers", &specs, "--reads", &ids.join(",")])
            .args(["--writes", &own.join(",")])
            .spawn()
            .with_context(|| format!("start the client next to {}", region.name))?;
        children.push((region.name.clone(), child));
    }
    tokio::time::sleep(Duration::from_secs(seconds / 2)).await;
    let lag = replay_lag(&servers.primary.url()).await;
    let kill_ms = epoch_ms();
    servers.kill_primary()?;
    let standby = servers.standby.clone();
    let primary = servers.primary.clone();
    let promotion = promote_when_dead(
        Duration::from_secs(seconds),
        || cluster::answers(&primary, PROBE_EVERY),
        || async {
            let (client, connection) =
                tokio_postgres::connect(&standby.url(), tokio_postgres::NoTls)
                    .await
                    .context("connect to the standby")?;
            tokio::spawn(connection);
            client
                .execute("SELECT pg_promote(true, 60)", &[])
                .await
                .context("promote the standby")?;
            Ok(())
        },
    )
    .await?;
    let by_location = collect_samples(children).await?;
    let homes = accounts
        .iter()
        .map(|a| (a.to_string(), primary.region.clone()))
        .collect();
    let run = LocationsRun {
        by_location,
        kill_ms,
        victim: primary.region.clone(),
        homes,
    };
    let present = deposits_on(&standby.url(), accounts).await?;
    let mut side = Side::new(
        "active-passive",
        run,
        promotion,
        &present,
        "gone for good: the standby is the only copy left",
    );
    side.note = Some(match lag {
        Some(ms) => format!(
            "the standby's replay lag just before the loss: {ms:.1} ms (acknowledged writes of that window are lost when the wire's bytes are too; this kill stops the processes, so bytes already sent still arrive)"
        ),
        None => "the standby's replay lag just before the loss: not reported (idle)".to_owned(),
    });
    Ok(side)
}

/// The standby's replay lag as the primary sees it, in ms.
async fn replay_lag(primary_url: &str) -> Option<f64> {
    let (client, connection) = tokio_postgres::connect(primary_url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    let row = client
        .query_opt(
            "SELECT (extract(epoch FROM replay_lag) * 1000)::float8 FROM pg_stat_replication",
            &[],
        )
        .await
        .ok()??;
    row.get::<_, Option<f64>>(0)
}

/// Deposits per account that `url`'s server holds.
async fn deposits_on(url: &str, accounts: &[i64]) -> anyhow::Result<BTreeMap<String, u64>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connect to count deposits")?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT account_id, count(*) FROM ledger.entries
             WHERE kind = 'deposit' AND account_id = ANY($1) GROUP BY account_id",
            &[&accounts],
        )
        .await
        .context("count deposits")?;
    Ok(rows
        .iter()
        .map(|row| {
            let count: i64 = row.get(1);
            (row.get::<_, i64>(0).to_string(), count.unsigned_abs())
        })
        .collect())
}

/// How our controller promotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OurPromote {
    /// `failover promote`: waits until the lost region's lease has run out at the
    /// voters; the gaining regions then wait out the fencing delay.
    WaitForLease,
    /// `failover promote --force`: at once; the fencing delay alone keeps the lost
    /// region and its successors from writing at the same time.
    Force,
}

/// Our run: `locations` with each location writing its own accounts, the first region
/// killed halfway, `failover promote` run by the controller.
pub async fn run_ours(
    deployment: &Deployment,
    seconds: u64,
    rate: u32,
    promote: OurPromote,
) -> anyhow::Result<Side> {
    let victim = deployment.regions[0].clone();
    let readyz = format!("{}/readyz", victim.api_url);
    let http = reqwest::Client::new();
    let failover = deployment.bin_dir.join("failover");
    let data_dir = deployment.data_dir.clone();
    let controller = promote_when_dead(
        Duration::from_secs(seconds * 2),
        || {
            let request = http.get(&readyz).timeout(PROBE_EVERY).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        },
        || async {
            let mut command = tokio::process::Command::new(&failover);
            command
                .arg("promote")
                .arg("--deployment")
                .arg(&data_dir)
                .args(["--region", &victim.name, "--wait-s", "60"]);
            if promote == OurPromote::Force {
                command.arg("--force");
            }
            let status = command
                .stdout(Stdio::null())
                .status()
                .await
                .context("run failover promote")?;
            anyhow::ensure!(status.success(), "failover promote exited with {status}");
            Ok(())
        },
    );
    let traffic = crate::locations::run(
        deployment,
        seconds,
        rate,
        &victim.name,
        crate::locations::Writes::OwnAccounts,
    );
    let (promotion, run) = tokio::join!(controller, traffic);
    let run = run?;
    let promotion = promotion?;
    let present = settled_deposits(deployment, &run).await?;
    let mut side = Side::new(
        "ours",
        run,
        promotion,
        &present,
        "in the lost region's database, replicated when it returns",
    );
    side.description = "every region writes its own accounts";
    Ok(side)
}

/// Deposits per account a survivor shows once replication has settled (balances in
/// whole deposits of 1.00), waiting up to 30 s for what was acknowledged.
async fn settled_deposits(
    deployment: &Deployment,
    run: &LocationsRun,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let survivor = deployment
        .regions
        .iter()
        .find(|r| r.name != run.victim)
        .context("no survivor")?;
    let client = crate::demo::Client::new(
        &survivor.name,
        &survivor.api_url,
        deployment.api_key.as_deref(),
    )?;
    let acked = figures::acknowledged(run);
    let mut present = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for account in run.homes.keys() {
            let (_, body) = client
                .get("read", &format!("/v1/accounts/{account}"))
                .await?;
            let balance = body
                .get("balance")
                .and_then(|b| b.as_str())
                .and_then(|b| b.parse::<f64>().ok())
                .unwrap_or(0.0);
            present.insert(account.clone(), balance.round() as u64);
        }
        let settled = acked
            .iter()
            .all(|(account, n)| present.get(account).copied().unwrap_or(0) >= *n);
        if settled || tokio::time::Instant::now() > deadline {
            return Ok(present);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
