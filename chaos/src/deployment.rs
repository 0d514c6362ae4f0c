//! Bringing a local deployment up and down, and the state file that remembers it.
//!
//! Region `i` uses ports `base + 10 i` (PostgreSQL) and `base + 10 i + 1` (the node's
//! API), and the directory `<data>/<region name>`. The PostgreSQL server leads the
//! region's process group and the node joins it, so one signal can stop a region.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use harness::dirs::{make_shared_dir, traversable_by_others};
use harness::node::{region_node_command, start_region_node};
use harness::process::{pid_alive, signal_group};
use harness::{PgCluster, PgOptions};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub const DEFAULT_BASE_PORT: u16 = 7100;
pub const REGION_NAMES: [&str; 5] = ["eu-west", "us-east", "ap-south", "sa-east", "af-south"];
const STATE_FILE: &str = "deployment.json";
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionState {
    pub name: String,
    pub index: usize,
    pub dir: PathBuf,
    pub pg_port: u16,
    pub api_port: u16,
    pub pg_pid: u32,
    pub node_pid: u32,
    /// Process group of the region (the PostgreSQL server's pid).
    pub pgid: u32,
}

impl RegionState {
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn database_url(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/ledger",
            harness::pg::SUPERUSER,
            self.pg_port
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub data_dir: PathBuf,
    pub regions: Vec<RegionState>,
}

impl Deployment {
    /// Starts `regions` regions under `data_dir` and waits until every node is ready.
    pub async fn up(
        data_dir: &Path,
        regions: usize,
        base_port: u16,
        bin_dir: &Path,
    ) -> anyhow::Result<Deployment> {
        if regions != 1 {
            bail!("this build runs one region; multi-region needs the ownership service and replication");
        }
        if let Some(existing) = Deployment::load(data_dir)? {
            if existing
                .regions
                .iter()
                .any(|r| pid_alive(r.node_pid) || pid_alive(r.pg_pid))
            {
                bail!(
                    "a deployment is already running in {}; run `ledger-local down` first",
                    data_dir.display()
                );
            }
        }
        let storage = storage_dir(data_dir)?;
        let node_bin = bin_dir.join("region-node");
        anyhow::ensure!(
            node_bin.exists(),
            "{} missing: build with scripts/setup.sh",
            node_bin.display()
        );

        let mut started = Vec::new();
        for (index, name) in REGION_NAMES.iter().take(regions).enumerate() {
            let name = (*name).to_owned();
            let dir = storage.join(&name);
            make_shared_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
            let offset = u16::try_from(index * 10).context("region index")?;
            let (pg_port, api_port) = (base_port + offset, base_port + offset + 1);
            println!(
                "starting {name}: PostgreSQL on :{pg_port}, API on :{api_port}, data in {}",
                dir.display()
            );
            let region = start_region(&name, index, &dir, pg_port, api_port, &node_bin).await;
            match region {
                Ok(region) => started.push(region),
                Err(error) => {
                    stop_regions(&started);
                    return Err(error.context(format!("start region {name}")));
                }
            }
        }
        let deployment = Deployment {
            data_dir: data_dir.to_owned(),
            regions: started,
        };
        deployment.save()?;
        Ok(deployment)
    }

    /// Stops every region of the deployment recorded in `data_dir`.
    pub fn down(data_dir: &Path) -> anyhow::Result<Option<Deployment>> {
        let Some(deployment) = Deployment::load(data_dir)? else {
            return Ok(None);
        };
        stop_regions(&deployment.regions);
        std::fs::remove_file(data_dir.join(STATE_FILE)).context("remove deployment state")?;
        Ok(Some(deployment))
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
        let path = self.data_dir.join(STATE_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }
}

async fn start_region(
    name: &str,
    index: usize,
    dir: &Path,
    pg_port: u16,
    api_port: u16,
    node_bin: &Path,
) -> anyhow::Result<RegionState> {
    let options = PgOptions {
        durable: true,
        port: Some(pg_port),
        own_process_group: true,
        ..PgOptions::default()
    };
    let (pg, database_url) = PgCluster::start_with_database(dir, &options, "ledger")
        .await
        .context("start PostgreSQL")?;
    let pg_pid = pg.detach().context("PostgreSQL pid")?;

    let mut command = region_node_command(node_bin, name, &database_url, api_port);
    command.process_group(i32::try_from(pg_pid).context("pid")?);
    let started = start_region_node(
        &format!("region-node {name}"),
        command,
        api_port,
        &dir.join("node.log"),
        Duration::from_secs(60),
    )
    .await;
    let node = match started {
        Ok(node) => node,
        Err(error) => {
            let _ = signal_group(pg_pid, Signal::SIGINT);
            return Err(error.into());
        }
    };
    let node_pid = node.detach().context("node pid")?;
    Ok(RegionState {
        name: name.to_owned(),
        index,
        dir: dir.to_owned(),
        pg_port,
        api_port,
        pg_pid,
        node_pid,
        pgid: pg_pid,
    })
}

/// Node first (so it drains against a live database), then PostgreSQL (fast shutdown),
/// then SIGKILL to whatever of the region's group is left after the grace period.
fn stop_regions(regions: &[RegionState]) {
    for region in regions {
        let _ = nix::sys::signal::kill(pid(region.node_pid), Signal::SIGTERM);
    }
    wait_gone(regions.iter().map(|r| r.node_pid));
    for region in regions {
        let _ = nix::sys::signal::kill(pid(region.pg_pid), Signal::SIGINT);
    }
    wait_gone(regions.iter().map(|r| r.pg_pid));
    for region in regions {
        if pid_alive(region.pg_pid) || pid_alive(region.node_pid) {
            let _ = signal_group(region.pgid, Signal::SIGKILL);
        }
    }
}

fn wait_gone(pids: impl Iterator<Item = u32> + Clone) {
    let deadline = Instant::now() + STOP_GRACE;
    while pids.clone().any(pid_alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid(raw: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(i32::try_from(raw).unwrap_or(i32::MAX))
}

/// Where region data really lives. PostgreSQL runs as the `postgres` user when we are
/// root, and cannot reach a data dir below a private home (e.g. /root, mode 700); then
/// the data goes to /var/tmp and `data_dir/regions` links to it.
fn storage_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    make_shared_dir(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().context("resolve data dir")?;
    let link = data_dir.join("regions");
    if link.exists() {
        return link.canonicalize().context("resolve region storage");
    }
    if !nix::unistd::Uid::effective().is_root() || traversable_by_others(&link) {
        make_shared_dir(&link)?;
        return Ok(link);
    }
    let hash = data_dir
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let real = PathBuf::from(format!("/var/tmp/ledger-local-{hash:016x}"));
    make_shared_dir(&real)?;
    std::os::unix::fs::symlink(&real, &link).context("link region storage")?;
    println!(
        "note: {} is not reachable by the postgres user; region data lives in {}",
        data_dir.display(),
        real.display()
    );
    Ok(real)
}
