//! Starting a region's processes: PostgreSQL first (it leads the region's process
//! group), then broker, voter and proxy, then node and replicator, each one alone too
//! (a fault that kills one process starts it again), and the readiness waits.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use harness::dirs::make_shared_dir;
use harness::process::{pid_alive, ChildGuard};
use harness::{PgCluster, PgOptions};
use nix::sys::signal::Signal;

use super::{Deployment, RegionState, START_TIMEOUT};
use crate::network::Network;
use crate::topology::LinkKind;
use crate::wait;

/// A postmaster SIGKILLed by a process other than its parent (`ledger-local kill`, the
/// failover tool's drill hooks) stays a zombie until its parent reaps it, and
/// PostgreSQL refuses to start while the pid in its lock file answers kill(0). A lock
/// whose pid is dead or a zombie is stale: remove it.
pub(super) fn remove_stale_lock(pgdata: &Path) -> anyhow::Result<()> {
    let lock = pgdata.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&lock) else {
        return Ok(());
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok());
    if pid.is_some_and(|pid| !pid_alive(pid)) {
        std::fs::remove_file(&lock).with_context(|| format!("remove {}", lock.display()))?;
    }
    Ok(())
}

pub(super) async fn start_postgres(
    dir: PathBuf,
    network: &Network,
    i: usize,
    port: u16,
) -> anyhow::Result<(PathBuf, u32, String)> {
    make_shared_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    let pg_options = PgOptions {
        durable: true,
        port: Some(port),
        own_process_group: true,
        host: network.namespace(i).map(|_| network.host(i)),
        namespace: network.namespace(i),
        ..PgOptions::default()
    };
    let (pg, url) = PgCluster::start_with_database(&dir, &pg_options, "ledger").await?;
    let pid = pg.detach().context("PostgreSQL pid")?;
    Ok((dir, pid, url))
}

/// Broker, ownership voter and the region's outgoing proxy.
pub(super) fn start_infrastructure(deployment: &mut Deployment, i: usize) -> anyhow::Result<()> {
    for what in ["broker", "voter", "proxy"] {
        start_process(deployment, i, what)?;
    }
    Ok(())
}

/// The region node and the replicator.
pub(super) fn start_services(deployment: &mut Deployment, i: usize) -> anyhow::Result<()> {
    for what in ["node", "replicator"] {
        start_process(deployment, i, what)?;
    }
    Ok(())
}

/// Starts one of a region's processes (not PostgreSQL: see
/// `Deployment::start_process`) in the region's group.
pub(super) fn start_process(
    deployment: &mut Deployment,
    i: usize,
    what: &str,
) -> anyhow::Result<()> {
    let command = match what {
        "broker" => broker_command(deployment, i)?,
        "voter" => voter_command(deployment, i),
        "proxy" => proxy_command(deployment, i),
        "node" => node_command(deployment, i),
        "replicator" => replicator_command(deployment, i),
        other => anyhow::bail!("no process {other:?} to start"),
    };
    spawn(deployment, i, what, command)
}

/// A delay loop of region `i` (`ledger-delay`, in the region's namespace and group):
/// the long-link fault's, or one of its geography's.
pub(super) struct DelayLoop {
    /// The process's name in the region (and its log's).
    pub what: String,
    pub queue: u16,
    pub latency: std::time::Duration,
    pub jitter: std::time::Duration,
    pub seed: u64,
}

/// Starts region `i`'s delay loop; the caller waits until it has bound its queue.
pub(super) fn start_delay(
    deployment: &mut Deployment,
    i: usize,
    delay_loop: &DelayLoop,
) -> anyhow::Result<()> {
    let mut delay = Command::new(bin(deployment, "ledger-delay"));
    delay
        .args(["--queue", &delay_loop.queue.to_string()])
        .args(["--latency-ms", &delay_loop.latency.as_millis().to_string()])
        .args(["--jitter-ms", &delay_loop.jitter.as_millis().to_string()])
        .args(["--seed", &delay_loop.seed.to_string()]);
    spawn(deployment, i, &delay_loop.what, delay)
}

fn bin(deployment: &Deployment, name: &str) -> PathBuf {
    deployment.bin_dir.join(name)
}

fn broker_command(deployment: &Deployment, i: usize) -> anyhow::Result<Command> {
    let dir = deployment.regions[i].dir.join("broker");
    std::fs::create_dir_all(dir.join("data")).context("create broker dir")?;
    Ok(harness::broker::Broker::command(
        &harness::broker::broker_bin()?,
        &dir,
        &deployment.network.host(i),
        deployment.topology().broker(i),
    ))
}

fn voter_command(deployment: &Deployment, i: usize) -> Command {
    let bootstrap = deployment
        .regions
        .iter()
        .map(|r| format!("{}={}", r.index + 1, r.voter))
        .collect::<Vec<_>>()
        .join(",");
    let region = &deployment.regions[i];
    let mut voter = Command::new(bin(deployment, "ownership-server"));
    voter
        .env("OWNERSHIP_LISTEN", &region.voter)
        .env("OWNERSHIP_NODE_ID", (i + 1).to_string())
        .env("OWNERSHIP_DATA_DIR", region.dir.join("voter"))
        .env("OWNERSHIP_BOOTSTRAP_VOTERS", &bootstrap)
        // A geography's slower Raft timings.
        .envs(
            deployment
                .geography
                .iter()
                .flat_map(|g| g.voter_timings().voter_env()),
        )
        .env("LEDGER_INTERNAL_SECRET", &deployment.secret)
        .env("LEDGER_LOG", "info,openraft=warn");
    voter
}

fn proxy_command(deployment: &Deployment, i: usize) -> Command {
    let (topology, network) = (deployment.topology(), deployment.network);
    let mut proxy = Command::new(bin(deployment, "ledger-proxy"));
    proxy.args(["--admin", &deployment.regions[i].proxy_admin]);
    for j in (0..deployment.regions.len()).filter(|j| *j != i) {
        for (kind, target) in [
            (LinkKind::Api, topology.api(j)),
            (LinkKind::Voter, topology.voter(j)),
        ] {
            proxy.args([
                "--link",
                &format!(
                    "{}={}:{}->{}:{target}",
                    topology.link_name(i, j, kind),
                    network.host(i),
                    topology.link(i, j, kind),
                    network.host(j),
                ),
            ]);
        }
    }
    proxy
}

/// Every region's public API as the deployment's clients reach it (`GET /v1/regions`).
fn public_urls(deployment: &Deployment) -> String {
    deployment
        .regions
        .iter()
        .map(|r| format!("{}={}", r.name, r.api_url))
        .collect::<Vec<_>>()
        .join(",")
}

fn node_command(deployment: &Deployment, i: usize) -> Command {
    let topology = deployment.topology();
    let region = &deployment.regions[i];
    let here = deployment.network.host(i);
    let mut voters = vec![region.voter.clone()];
    let mut peers = Vec::new();
    for j in (0..deployment.regions.len()).filter(|j| *j != i) {
        voters.push(format!("{here}:{}", topology.link(i, j, LinkKind::Voter)));
        peers.push(format!(
            "{}=http://{here}:{}",
            topology.name(j),
            topology.link(i, j, LinkKind::Api)
        ));
    }
    let mut node = Command::new(bin(deployment, "region-node"));
    node.env("LEDGER_REGION", &region.name)
        .env("LEDGER_DATABASE_URL", &region.database_url)
        .env("LEDGER_LISTEN", format!("{here}:{}", topology.api(i)))
        .env("LEDGER_SLOT_COUNT", deployment.slot_count.to_string())
        .env("LEDGER_OWNERSHIP_VOTERS", voters.join(","))
        .env("LEDGER_PEERS", peers.join(","))
        .env("LEDGER_PUBLIC_URLS", public_urls(deployment))
        .env("LEDGER_INTERNAL_SECRET", &deployment.secret);
    if deployment.api_key.is_some() {
        node.env("LEDGER_API_KEYS_FILE", deployment.api_keys_file());
    }
    for (key, value) in &deployment.node_env {
        node.env(key, value);
    }
    if let Some(rate) = region.node_clock_rate {
        // Every clock the node reads (monotonic included) and its sleeps run at `rate`.
        node.env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", format!("+0 x{rate}"));
    }
    node
}

/// libfaketime's multi-threaded build (Debian package `faketime`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn replicator_command(deployment: &Deployment, i: usize) -> Command {
    let region = &deployment.regions[i];
    let apply_from: Vec<String> = deployment
        .regions
        .iter()
        .filter(|r| r.index != i)
        .map(|r| format!("{}={}", r.name, r.broker))
        .collect();
    let mut replicator = Command::new(bin(deployment, "ledger-replicator"));
    replicator
        .env("LEDGER_REGION", &region.name)
        .env("LEDGER_DATABASE_URL", &region.database_url)
        .env("LEDGER_BROKERS", &region.broker)
        .env("LEDGER_REPLICATOR_LISTEN", &region.replicator_metrics)
        .env("LEDGER_INTERNAL_SECRET", &deployment.secret);
    // One region alone has no one to apply from (an empty list is not a valid value).
    if !apply_from.is_empty() {
        replicator.env("LEDGER_APPLY_FROM", apply_from.join(" "));
    }
    replicator
}

pub(super) async fn wait_infrastructure(region: &RegionState) -> anyhow::Result<()> {
    for what in ["broker", "voter", "proxy"] {
        wait_process(region, what).await?;
    }
    Ok(())
}

/// Waits until one of a region's processes answers (the broker: and has its index).
pub(super) async fn wait_process(region: &RegionState, what: &str) -> anyhow::Result<()> {
    let http = |path: String| async move { wait::http_ok(&path, START_TIMEOUT).await };
    match what {
        "broker" => {
            wait::tcp(&region.broker, START_TIMEOUT)
                .await
                .context("broker")?;
            harness::broker::index_headers(&harness::broker::data_file(&region.dir.join("broker")))
                .await
                .context("index the broker's headers")
        }
        "voter" => http(format!("http://{}/healthz", region.voter))
            .await
            .context("ownership voter"),
        "proxy" => http(format!("http://{}/links", region.proxy_admin))
            .await
            .context("proxy"),
        "node" => http(format!("{}/readyz", region.api_url))
            .await
            .with_context(|| format!("region node {}", region.name)),
        "replicator" => http(format!("http://{}/healthz", region.replicator_metrics))
            .await
            .with_context(|| format!("replicator {}", region.name)),
        other => anyhow::bail!("no process {other:?} to wait for"),
    }
}

/// Waits for the node and replicator; `holds_lease`: also until the node holds slots
/// (not for a region coming back deposed, which owns nothing).
pub(super) async fn wait_services(region: &RegionState, holds_lease: bool) -> anyhow::Result<()> {
    for what in ["node", "replicator"] {
        wait_process(region, what).await?;
    }
    if holds_lease {
        wait::metric_above(
            &format!("{}/metrics", region.api_url),
            "ledger_lease_slots",
            0.0,
            START_TIMEOUT,
        )
        .await
        .with_context(|| format!("lease of {}", region.name))?;
    }
    println!(
        "{}: ready (API {}, broker {}, voter {})",
        region.name, region.api_url, region.broker, region.voter
    );
    Ok(())
}

/// Starts `command` in region `i`'s process group with its log in the region dir.
fn spawn(
    deployment: &mut Deployment,
    i: usize,
    what: &str,
    command: Command,
) -> anyhow::Result<()> {
    let mut command = match deployment.network.namespace(i) {
        Some(namespace) => harness::netns::in_namespace(&command, &namespace),
        None => command,
    };
    let region = &mut deployment.regions[i];
    command.process_group(i32::try_from(region.pgid).context("pgid")?);
    if std::env::var_os("LEDGER_LOG").is_none() && what != "voter" {
        command.env("LEDGER_LOG", "info");
    }
    let log = region.dir.join(format!("{what}.log"));
    let guard = ChildGuard::spawn(
        format!("{what} {}", region.name),
        command,
        &log,
        Signal::SIGTERM,
    )?;
    let pid = guard.detach().context("pid")?;
    region.pids.insert(what.to_owned(), pid);
    Ok(())
}
