//! Bringing a local N-region deployment up and down, and the state file that
//! remembers it.
//!
//! Per region: PostgreSQL (it leads the region's process group), a Tansu broker, an
//! ownership voter, a proxy carrying the region's outgoing links, the region node and
//! the replicator (relay + one applier per other region); every one of them joins the
//! group, so one signal kills a region. Ports come from [`Topology`]; data lives in
//! `<data>/regions/<name>`.

mod distance;
mod faults;
pub mod monitoring;
mod start;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use harness::process::{pid_alive, signal_group};
use ledger_wire::ownership::RegionSpec;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::geography::Geography;
use crate::network::Network;
use crate::storage::storage_dir;
use crate::topology::Topology;
use start::{
    remove_stale_lock, start_infrastructure, start_postgres, start_services, wait_infrastructure,
    wait_services,
};

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
    /// Also start a Prometheus scraping every process, rules loaded.
    pub monitoring: bool,
    /// Put the public API behind API keys: one key (tenant `local`, read and write)
    /// goes into the state file, its hash into `api-keys.json`, which every node reads.
    pub api_keys: bool,
    /// Distance between the regions on every link (namespaces only); the voters' and
    /// leases' timings follow it ([`Geography::voter_timings`]).
    pub geography: Option<Geography>,
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
            monitoring: false,
            api_keys: false,
            geography: None,
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
    /// The rate of the node's clocks (wall and monotonic) under libfaketime, when set
    /// (`ledger-local drift`): 0.99 runs 1% slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_clock_rate: Option<f64>,
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
    /// The public API's key when started with API keys (`up --api-keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    pub regions: Vec<RegionState>,
    /// Extra node environment and the binaries' dir, kept to restart a region alike.
    #[serde(default)]
    pub node_env: Vec<(String, String)>,
    #[serde(default)]
    pub bin_dir: PathBuf,
    #[serde(default)]
    pub network: Network,
    /// The deployment's Prometheus, when started with monitoring.
    #[serde(default)]
    pub monitoring: Option<monitoring::Monitoring>,
    /// Distance between the regions (`up --geo`), kept to restart a region alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geography: Option<Geography>,
}

impl Deployment {
    /// The key file every node reads when the deployment uses API keys.
    pub fn api_keys_file(&self) -> PathBuf {
        self.data_dir.join("api-keys.json")
    }

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
        let lease_ttl_ms = match &options.geography {
            None => options.lease_ttl_ms,
            Some(geography) => {
                anyhow::ensure!(
                    options.network.is_namespaces(),
                    "a geography needs regions in network namespaces (`ledger-local up --namespaces`)"
                );
                options
                    .lease_ttl_ms
                    .max(geography.voter_timings().lease_ttl_ms)
            }
        };
        let storage = storage_dir(data_dir)?;
        let mut deployment = Deployment {
            data_dir: data_dir.to_owned(),
            base_port: options.base_port,
            slot_count: options.slot_count,
            lease_ttl_ms,
            secret: new_secret(),
            api_key: None,
            regions: Vec::new(),
            node_env: options.node_env.clone(),
            bin_dir: options.bin_dir.clone(),
            network: options.network,
            monitoring: None,
            geography: options.geography.clone(),
        };
        if options.api_keys {
            deployment.api_key = Some(write_api_key(&deployment.api_keys_file())?);
        }
        options
            .network
            .create(options.regions)
            .context("create the regions' network namespaces")?;
        let mut started = start_all(&mut deployment, &topology, &storage, options).await;
        if started.is_ok() {
            started = deployment.apply_geography().await;
        }
        if started.is_ok() && options.monitoring {
            match monitoring::start(&deployment, topology.prometheus()).await {
                Ok(running) => deployment.monitoring = Some(running),
                Err(error) => started = Err(error.context("start Prometheus")),
            }
        }
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
        start_infrastructure(self, i)?;
        wait_infrastructure(&self.regions[i]).await?;
        start_services(self, i)?;
        wait_services(&self.regions[i], false).await?;
        self.start_distance_loops(i).await?;
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
        if let Some(monitoring) = &self.monitoring {
            stop_pids(&[monitoring.pid], Signal::SIGTERM);
        }
        stop_regions(&self.regions);
        self.network.destroy(self.regions.len());
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
            node_clock_rate: None,
        });
    }
    for i in 0..n {
        start_infrastructure(deployment, i)?;
    }
    for i in 0..n {
        wait_infrastructure(&deployment.regions[i]).await?;
    }
    init_ownership(deployment, options).await?;
    for i in 0..n {
        start_services(deployment, i)?;
    }
    for region in &deployment.regions {
        wait_services(region, true).await?;
    }
    Ok(())
}

/// Makes the deployment's one API key and writes the key file with its hash.
fn write_api_key(path: &Path) -> anyhow::Result<String> {
    use ledger_wire::api_keys::{generate, KeyFile, Scope};
    let created = chrono::Utc::now().to_rfc3339();
    let (key, record) = generate("local", [Scope::Read, Scope::Write].into(), created);
    let file = KeyFile { keys: vec![record] };
    std::fs::write(path, serde_json::to_string_pretty(&file)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(key)
}

/// Creates the ownership cluster once (a deployment started again keeps its map).
async fn init_ownership(deployment: &Deployment, options: &UpOptions) -> anyhow::Result<()> {
    let voters = deployment.regions.iter().map(|r| r.voter.clone()).collect();
    let client = ownership_client::OwnershipClient::new(voters, "ledger-local", &deployment.secret)
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
        .init_cluster(options.slot_count, deployment.lease_ttl_ms, regions)
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
        stop_pids(&pids, signal);
    }
    for region in regions {
        if region.alive() {
            let _ = signal_group(region.pgid, Signal::SIGKILL);
        }
    }
}

/// Signals `pids` and waits until they are gone (or the grace is over).
fn stop_pids(pids: &[u32], signal: Signal) {
    for pid in pids {
        if pid_alive(*pid) {
            let _ = nix::sys::signal::kill(raw_pid(*pid), signal);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while pids.iter().copied().any(pid_alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
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
