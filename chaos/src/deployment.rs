//! Bringing a local N-region deployment up and down, and the state file that
//! remembers it.
//!
//! Per region: PostgreSQL (it leads the region's process group), a Tansu broker, an
//! ownership voter, a proxy carrying the region's outgoing links, the region node and
//! the replicator (relay + one applier per other region); every one of them joins the
//! group, so one signal kills a region. Ports come from [`Topology`]; data lives in
//! `<data>/regions/<name>`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use harness::dirs::make_shared_dir;
use harness::process::{pid_alive, signal_group, ChildGuard};
use harness::{PgCluster, PgOptions};
use ledger_wire::ownership::RegionSpec;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::network::Network;
use crate::storage::storage_dir;
use crate::topology::{LinkKind, Topology};
use crate::wait;

const STATE_FILE: &str = "deployment.json";
const STOP_GRACE: Duration = Duration::from_secs(15);
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Processes of a region, in the order they stop.
pub const PROCESSES: [&str; 6] = ["node", "replicator", "proxy", "voter", "broker", "postgres"];

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub regions: usize,
    pub base_port: u16,
    pub slot_count: u32,
    pub lease_ttl_ms: u64,
    /// Extra environment for every region node (`LEDGER_*` settings).
    pub node_env: Vec<(String, String)>,
    /// Directory of the workspace's binaries.
    pub bin_dir: PathBuf,
    /// Loopback, or one network namespace per region (see [`Network`]).
    pub network: Network,
}

impl UpOptions {
    pub fn new(regions: usize, base_port: u16, bin_dir: PathBuf) -> Self {
        UpOptions {
            regions,
            base_port,
            slot_count: 4096,
            lease_ttl_ms: 2_000,
            node_env: Vec::new(),
            bin_dir,
            network: Network::Loopback,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionState {
    pub name: String,
    pub index: usize,
    pub dir: PathBuf,
    /// Process group of the region (the PostgreSQL server's pid).
    pub pgid: u32,
    /// pid of each process, by name (see [`PROCESSES`]).
    pub pids: BTreeMap<String, u32>,
    pub api_url: String,
    pub database_url: String,
    pub broker: String,
    pub voter: String,
    pub proxy_admin: String,
    pub replicator_metrics: String,
}

impl RegionState {
    pub fn pid(&self, process: &str) -> Option<u32> {
        self.pids.get(process).copied()
    }

    pub fn alive(&self) -> bool {
        self.pids.values().any(|p| pid_alive(*p))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub data_dir: PathBuf,
    pub base_port: u16,
    pub slot_count: u32,
    pub lease_ttl_ms: u64,
    /// Signs internal region-to-region calls (kept in the state file, mode 0600).
    pub secret: String,
    pub regions: Vec<RegionState>,
    /// Extra node environment and the binaries' dir, kept to restart a region alike.
    #[serde(default)]
    pub node_env: Vec<(String, String)>,
    #[serde(default)]
    pub bin_dir: PathBuf,
    #[serde(default)]
    pub network: Network,
}

impl Deployment {
    /// Starts the regions under `data_dir`, initialises the ownership cluster, and waits
    /// until every node serves and holds its lease.
    pub async fn up(data_dir: &Path, options: &UpOptions) -> anyhow::Result<Deployment> {
        let topology =
            Topology::new(options.base_port, options.regions).map_err(anyhow::Error::msg)?;
        if let Some(existing) = Deployment::load(data_dir)? {
            if existing.regions.iter().any(RegionState::alive) {
                bail!(
                    "a deployment is already running in {}; run `ledger-local down` first",
                    data_dir.display()
                );
            }
        }
        for i in (0..options.regions).filter(|_| !options.network.is_namespaces()) {
            for port in topology.ports_of(i) {
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                    bail!(
                        "port {port} (region {}) is in use; choose another --base-port",
                        topology.name(i)
                    );
                }
            }
        }
        for bin in [
            "region-node",
            "ledger-replicator",
            "ownership-server",
            "ledger-proxy",
        ] {
            let path = options.bin_dir.join(bin);
            anyhow::ensure!(
                path.exists(),
                "{} missing: build the workspace first",
                path.display()
            );
        }
        let storage = storage_dir(data_dir)?;
        let mut deployment = Deployment {
            data_dir: data_dir.to_owned(),
            base_port: options.base_port,
            slot_count: options.slot_count,
            lease_ttl_ms: options.lease_ttl_ms,
            secret: new_secret(),
            regions: Vec::new(),
            node_env: options.node_env.clone(),
            bin_dir: options.bin_dir.clone(),
            network: options.network,
        };
        options
            .network
            .create(options.regions)
            .context("create the regions' network namespaces")?;
        let started = start_all(&mut deployment, &topology, &storage, options).await;
        if let Err(error) = started {
            deployment.stop();
            return Err(error);
        }
        deployment.save()?;
        Ok(deployment)
    }

    pub fn topology(&self) -> Topology {
        Topology {
            base_port: self.base_port,
            regions: self.regions.len(),
        }
    }

    pub fn region(&self, name: &str) -> anyhow::Result<&RegionState> {
        self.regions
            .iter()
            .find(|r| r.name == name)
            .with_context(|| format!("no region {name:?} in this deployment"))
    }

    /// Pauses a region's node (SIGSTOP) for `pause`, then lets it go on (SIGCONT).
    pub fn pause_node(&self, name: &str, pause: Duration) -> anyhow::Result<()> {
        let pid = self
            .region(name)?
            .pid("node")
            .with_context(|| format!("{name} has no node"))?;
        nix::sys::signal::kill(raw_pid(pid), Signal::SIGSTOP)
            .with_context(|| format!("stop the node of {name} (pid {pid})"))?;
        // Fault timing, not synchronisation: the node is frozen for exactly this long.
        std::thread::sleep(pause);
        nix::sys::signal::kill(raw_pid(pid), Signal::SIGCONT)
            .with_context(|| format!("continue the node of {name} (pid {pid})"))
    }

    /// Stops (SIGSTOP) a region's replicator, so its relay publishes nothing more.
    pub fn hold_replicator(&self, name: &str) -> anyhow::Result<()> {
        let pid = self
            .region(name)?
            .pid("replicator")
            .with_context(|| format!("{name} has no replicator"))?;
        nix::sys::signal::kill(raw_pid(pid), Signal::SIGSTOP)
            .with_context(|| format!("stop the replicator of {name} (pid {pid})"))
    }

    /// SIGKILLs every process of a region at once (its process group).
    pub fn kill_region(&self, name: &str) -> anyhow::Result<()> {
        let region = self.region(name)?;
        signal_group(region.pgid, Signal::SIGKILL)
            .with_context(|| format!("kill process group {}", region.pgid))?;
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            // Processes this one started stay zombies until reaped, and PostgreSQL
            // refuses to start while its old pid still looks alive.
            for pid in region.pids.values() {
                let _ = nix::sys::wait::waitpid(
                    raw_pid(*pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
            if !region.alive() || Instant::now() >= deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a killed region again on its data (PostgreSQL, broker, voter, proxy, node,
    /// replicator), waits until its node and replicator answer, and saves the state.
    pub async fn restart_region(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.region(name)?.index;
        anyhow::ensure!(
            !self.regions[i].alive(),
            "{name} is still running; kill it first"
        );
        remove_stale_lock(&self.regions[i].dir.join("pgdata"))?;
        let topology = self.topology();
        let (_, pid, _) = start_postgres(
            self.regions[i].dir.clone(),
            &self.network,
            i,
            topology.pg(i),
        )
        .await
        .with_context(|| format!("start PostgreSQL of {name}"))?;
        let region = &mut self.regions[i];
        region.pgid = pid;
        region.pids = BTreeMap::from([("postgres".to_owned(), pid)]);
        start_infrastructure(self, &topology, i)?;
        wait_infrastructure(&self.regions[i]).await?;
        start_services(self, &topology, i)?;
        wait_services(&self.regions[i], false).await?;
        self.save()
    }

    /// Stops every region of the deployment recorded in `data_dir`.
    pub fn down(data_dir: &Path) -> anyhow::Result<Option<Deployment>> {
        let Some(deployment) = Deployment::load(data_dir)? else {
            return Ok(None);
        };
        deployment.stop();
        std::fs::remove_file(data_dir.join(STATE_FILE)).context("remove deployment state")?;
        Ok(Some(deployment))
    }

    /// Stops the processes of this value and removes its namespaces (tests: in place
    /// of `down`).
    pub fn stop(&self) {
        stop_regions(&self.regions);
        self.network.destroy(self.regions.len());
    }

    /// Cuts region `name` off from every other region, every link (namespaces only).
    pub fn partition(&self, name: &str) -> anyhow::Result<()> {
        let i = self.region(name)?.index;
        self.network.partition(i, self.regions.len())
    }

    /// Region `from` can no longer reach region `to`; `to` still reaches `from`.
    pub fn partition_one_way(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let (from, to) = (self.region(from)?.index, self.region(to)?.index);
        self.network.partition_one_way(from, to)
    }

    /// Ends every partition.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.network.heal(self.regions.len())
    }

    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Deployment>> {
        let path = data_dir.join(STATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("read {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.data_dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("write {}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .with_context(|| format!("write {}", path.display()))
    }
}

async fn start_all(
    deployment: &mut Deployment,
    topology: &Topology,
    storage: &Path,
    options: &UpOptions,
) -> anyhow::Result<()> {
    let n = options.regions;
    // PostgreSQL first, all regions at once: each server leads its region's group.
    let network = deployment.network;
    let pg_starts =
        (0..n).map(|i| start_postgres(storage.join(topology.name(i)), &network, i, topology.pg(i)));
    for (i, started) in futures::future::join_all(pg_starts)
        .await
        .into_iter()
        .enumerate()
    {
        let (dir, pid, url) =
            started.with_context(|| format!("start PostgreSQL of {}", topology.name(i)))?;
        let name = topology.name(i).to_owned();
        let host = network.host(i);
        println!(
            "{name}: PostgreSQL up on :{} (data in {})",
            topology.pg(i),
            dir.display()
        );
        deployment.regions.push(RegionState {
            name,
            index: i,
            dir,
            pgid: pid,
            pids: BTreeMap::from([("postgres".to_owned(), pid)]),
            api_url: format!("http://{host}:{}", topology.api(i)),
            database_url: url,
            broker: format!("{host}:{}", topology.broker(i)),
            voter: format!("{host}:{}", topology.voter(i)),
            proxy_admin: format!("{host}:{}", topology.proxy_admin(i)),
            replicator_metrics: format!("{host}:{}", topology.replicator(i)),
        });
    }
    for i in 0..n {
        start_infrastructure(deployment, topology, i)?;
    }
    for i in 0..n {
        wait_infrastructure(&deployment.regions[i]).await?;
    }
    init_ownership(deployment, options).await?;
    for i in 0..n {
        start_services(deployment, topology, i)?;
    }
    for region in &deployment.regions {
        wait_services(region, true).await?;
    }
    Ok(())
}

/// A postmaster SIGKILLed by a process other than its parent (`ledger-local kill`, the
/// failover tool's drill hooks) stays a zombie until its parent reaps it, and
/// PostgreSQL refuses to start while the pid in its lock file answers kill(0). A lock
/// whose pid is dead or a zombie is stale: remove it.
fn remove_stale_lock(pgdata: &Path) -> anyhow::Result<()> {
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

async fn start_postgres(
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
fn start_infrastructure(
    deployment: &mut Deployment,
    topology: &Topology,
    i: usize,
) -> anyhow::Result<()> {
    let n = deployment.regions.len();
    let network = deployment.network;
    let bin = |name: &str| deployment.bin_dir.join(name);
    let bootstrap = (0..n)
        .map(|i| format!("{}={}:{}", i + 1, network.host(i), topology.voter(i)))
        .collect::<Vec<_>>()
        .join(",");
    let dir = deployment.regions[i].dir.clone();
    std::fs::create_dir_all(dir.join("broker/data")).context("create broker dir")?;
    let broker = harness::broker::Broker::command(
        &harness::broker::tansu_bin()?,
        &dir.join("broker"),
        &network.host(i),
        topology.broker(i),
    );
    let mut voter = Command::new(bin("ownership-server"));
    voter
        .env("OWNERSHIP_LISTEN", &deployment.regions[i].voter)
        .env("OWNERSHIP_NODE_ID", (i + 1).to_string())
        .env("OWNERSHIP_DATA_DIR", dir.join("voter"))
        .env("OWNERSHIP_BOOTSTRAP_VOTERS", &bootstrap)
        .env("LEDGER_LOG", "info,openraft=warn");
    let mut proxy = Command::new(bin("ledger-proxy"));
    proxy.args(["--admin", &deployment.regions[i].proxy_admin]);
    for j in (0..n).filter(|j| *j != i) {
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
    spawn(deployment, i, "broker", broker)?;
    spawn(deployment, i, "voter", voter)?;
    spawn(deployment, i, "proxy", proxy)
}

async fn wait_infrastructure(region: &RegionState) -> anyhow::Result<()> {
    wait::tcp(&region.broker, START_TIMEOUT)
        .await
        .context("broker")?;
    harness::broker::index_headers(&harness::broker::data_file(&region.dir.join("broker")))
        .await
        .context("index the broker's headers")?;
    wait::http_ok(&format!("http://{}/healthz", region.voter), START_TIMEOUT)
        .await
        .context("ownership voter")?;
    wait::http_ok(
        &format!("http://{}/links", region.proxy_admin),
        START_TIMEOUT,
    )
    .await
    .context("proxy")
}

/// The region node and the replicator.
fn start_services(
    deployment: &mut Deployment,
    topology: &Topology,
    i: usize,
) -> anyhow::Result<()> {
    let n = deployment.regions.len();
    let region = deployment.regions[i].clone();
    let here = deployment.network.host(i);
    let bin = |name: &str| deployment.bin_dir.join(name);
    let mut voters = vec![region.voter.clone()];
    let mut peers = Vec::new();
    let mut apply_from = Vec::new();
    for j in (0..n).filter(|j| *j != i) {
        voters.push(format!("{here}:{}", topology.link(i, j, LinkKind::Voter)));
        peers.push(format!(
            "{}=http://{here}:{}",
            topology.name(j),
            topology.link(i, j, LinkKind::Api)
        ));
        apply_from.push(format!(
            "{}={}",
            topology.name(j),
            deployment.regions[j].broker
        ));
    }
    let mut node = Command::new(bin("region-node"));
    node.env("LEDGER_REGION", &region.name)
        .env("LEDGER_DATABASE_URL", &region.database_url)
        .env("LEDGER_LISTEN", format!("{here}:{}", topology.api(i)))
        .env("LEDGER_SLOT_COUNT", deployment.slot_count.to_string())
        .env("LEDGER_OWNERSHIP_VOTERS", voters.join(","))
        .env("LEDGER_PEERS", peers.join(","))
        .env("LEDGER_INTERNAL_SECRET", &deployment.secret);
    for (key, value) in &deployment.node_env {
        node.env(key, value);
    }
    let mut replicator = Command::new(bin("ledger-replicator"));
    replicator
        .env("LEDGER_REGION", &region.name)
        .env("LEDGER_DATABASE_URL", &region.database_url)
        .env("LEDGER_BROKERS", &region.broker)
        .env("LEDGER_REPLICATOR_LISTEN", &region.replicator_metrics);
    // One region alone has no one to apply from (an empty list is not a valid value).
    if !apply_from.is_empty() {
        replicator.env("LEDGER_APPLY_FROM", apply_from.join(" "));
    }
    spawn(deployment, i, "node", node)?;
    spawn(deployment, i, "replicator", replicator)
}

/// Waits for the node and replicator; `holds_lease`: also until the node holds slots
/// (not for a region coming back deposed, which owns nothing).
async fn wait_services(region: &RegionState, holds_lease: bool) -> anyhow::Result<()> {
    wait::http_ok(&format!("{}/readyz", region.api_url), START_TIMEOUT)
        .await
        .with_context(|| format!("region node {}", region.name))?;
    wait::http_ok(
        &format!("http://{}/healthz", region.replicator_metrics),
        START_TIMEOUT,
    )
    .await
    .with_context(|| format!("replicator {}", region.name))?;
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

/// Creates the ownership cluster once (a deployment started again keeps its map).
async fn init_ownership(deployment: &Deployment, options: &UpOptions) -> anyhow::Result<()> {
    let voters = deployment.regions.iter().map(|r| r.voter.clone()).collect();
    let client = ownership_client::OwnershipClient::new(voters, "ledger-local")
        .context("ownership client")?
        .with_retry_for(Duration::from_secs(30));
    let regions = deployment
        .regions
        .iter()
        .map(|r| RegionSpec {
            name: r.name.clone(),
            weight: 1,
        })
        .collect();
    match client
        .init_cluster(options.slot_count, options.lease_ttl_ms, regions)
        .await
    {
        Ok(_) => Ok(()),
        Err(ownership_client::ClientError::Rejected {
            code: ledger_wire::ownership::RejectCode::AlreadyInitialized,
            ..
        }) => Ok(()),
        Err(e) => Err(e).context("initialise the ownership cluster"),
    }
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

/// SIGTERM to each process in [`PROCESSES`] order (nodes drain against a live
/// database), waiting for each tier; SIGKILL to whatever is left of a region's group.
fn stop_regions(regions: &[RegionState]) {
    for process in PROCESSES {
        let signal = if process == "postgres" {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        let pids: Vec<u32> = regions.iter().filter_map(|r| r.pid(process)).collect();
        for pid in &pids {
            if pid_alive(*pid) {
                let _ = nix::sys::signal::kill(raw_pid(*pid), signal);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while pids.iter().copied().any(pid_alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for region in regions {
        if region.alive() {
            let _ = signal_group(region.pgid, Signal::SIGKILL);
        }
    }
}

fn raw_pid(pid: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

fn new_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}
