//! `ledger-local up --monitoring`: a real Prometheus (Debian's `prometheus` package)
//! scraping every region's node, replicator and ownership voter every 2 s, with the
//! shipped alert and recording rules loaded (`observability/prometheus/alerts.yml`, built
//! into this binary so a deployment never reads a stale copy), its data and log in
//! `<data-dir>/monitoring`. It listens on loopback at the deployment's port
//! [`Topology::prometheus`] and stops with the deployment.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use harness::process::ChildGuard;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::{Deployment, RegionState};

/// The rules every monitored deployment loads.
pub const RULES: &str = include_str!("../../../observability/prometheus/alerts.yml");
/// Where Debian's package puts the server.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
const SCRAPE_INTERVAL: &str = "2s";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Monitoring {
    pub pid: u32,
    /// `http://127.0.0.1:<port>`: the web UI and the query API.
    pub url: String,
    pub dir: PathBuf,
}

/// The scrape configuration: one job per process kind. Nodes and replicators label
/// their series with their region themselves; voters get `voter_region` (a voter's own
/// `region` label names the region a lease renewal came from).
pub fn config(deployment: &Deployment, rules: &Path) -> String {
    let mut yaml = format!(
        "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         rule_files:\n  - {}\nscrape_configs:\n",
        rules.display()
    );
    let address = |job: &str, r: &RegionState| match job {
        "ledger-node" => r.api_url.trim_start_matches("http://").to_owned(),
        "ledger-replicator" => r.replicator_metrics.clone(),
        _ => r.voter.clone(),
    };
    for job in ["ledger-node", "ledger-replicator", "ledger-ownership"] {
        let _ = writeln!(yaml, "  - job_name: {job}\n    static_configs:");
        for region in &deployment.regions {
            let _ = writeln!(yaml, "      - targets: ['{}']", address(job, region));
            if job == "ledger-ownership" {
                let _ = writeln!(yaml, "        labels: {{ voter_region: {} }}", region.name);
            }
        }
    }
    yaml
}

/// Starts Prometheus for `deployment` and waits until it is ready.
pub async fn start(deployment: &Deployment, port: u16) -> anyhow::Result<Monitoring> {
    anyhow::ensure!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} missing: install Debian's `prometheus` package (scripts/setup.sh does)"
    );
    let dir = deployment.data_dir.join("monitoring");
    std::fs::create_dir_all(dir.join("data")).context("create the monitoring dir")?;
    let rules = dir.join("alerts.yml");
    std::fs::write(&rules, RULES).context("write the alert rules")?;
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config(deployment, &rules)).context("write prometheus.yml")?;
    let mut command = Command::new(PROMETHEUS);
    command
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=1d")
        .process_group(0);
    let guard = ChildGuard::spawn(
        "prometheus",
        command,
        &dir.join("prometheus.log"),
        Signal::SIGTERM,
    )?;
    let url = format!("http://127.0.0.1:{port}");
    let ready = harness::wait_until(READY_TIMEOUT, Duration::from_millis(100), || async {
        let answer = reqwest::get(format!("{url}/-/ready")).await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
    anyhow::ensure!(
        ready.is_some(),
        "Prometheus did not get ready within {} s; see {}",
        READY_TIMEOUT.as_secs(),
        dir.join("prometheus.log").display()
    );
    let pid = guard.detach().context("prometheus pid")?;
    Ok(Monitoring { pid, url, dir })
}
