//! A cluster of real `ownership-server` voter processes on loopback, each with its own
//! port, data dir and log, that tests and launchers can kill, pause and restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use ownership_client::OwnershipClient;

use crate::node::wait_http_ready;
use crate::process::ChildGuard;
use crate::{free_port, io_context, wait_until, HarnessError};

/// Timing flags for fast elections on loopback.
#[derive(Debug, Clone)]
pub struct VoterTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_every: u64,
    pub commit_timeout_ms: u64,
}

impl Default for VoterTiming {
    fn default() -> Self {
        VoterTiming {
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_every: 5000,
            commit_timeout_ms: 3000,
        }
    }
}

#[derive(Debug)]
pub struct Voter {
    pub id: u64,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    process: Option<ChildGuard>,
}

/// The deployment secret of every cluster the harness starts (voters refuse unsigned
/// calls; tests sign theirs with it through `ownership-client`).
pub const TEST_SECRET: &str = "harness-test-secret-0123456789";

impl Voter {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

#[derive(Debug)]
pub struct VoterCluster {
    bin: PathBuf,
    bootstrap: String,
    timing: VoterTiming,
    pub voters: Vec<Voter>,
}

impl VoterCluster {
    /// Starts `count` voters (ids 1..=count) on free ports under `dir` and waits until
    /// each serves HTTP.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        count: usize,
        timing: VoterTiming,
    ) -> Result<Self, HarnessError> {
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect::<Result<_, _>>()?;
        let voters: Vec<Voter> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| Voter {
                id: i as u64 + 1,
                port: *port,
                data_dir: dir.join(format!("voter-{}", i + 1)),
                log: dir.join(format!("voter-{}.log", i + 1)),
                process: None,
            })
            .collect();
        let bootstrap = voters
            .iter()
            .map(|v| format!("{}={}", v.id, v.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = VoterCluster {
            bin: bin.to_owned(),
            bootstrap,
            timing,
            voters,
        };
        for index in 0..cluster.voters.len() {
            cluster.spawn(index)?;
        }
        for index in 0..cluster.voters.len() {
            cluster.wait_serving(index).await?;
        }
        Ok(cluster)
    }

    pub fn addrs(&self) -> Vec<String> {
        self.voters.iter().map(Voter::addr).collect()
    }

    fn spawn(&mut self, index: usize) -> Result<(), HarnessError> {
        let voter = &self.voters[index];
        std::fs::create_dir_all(&voter.data_dir)
            .map_err(io_context(format!("create {}", voter.data_dir.display())))?;
        let t = &self.timing;
        let mut command = Command::new(&self.bin);
        command
            .env("OWNERSHIP_LISTEN", voter.addr())
            .env("OWNERSHIP_NODE_ID", voter.id.to_string())
            .env("OWNERSHIP_DATA_DIR", &voter.data_dir)
            .env("OWNERSHIP_BOOTSTRAP_VOTERS", &self.bootstrap)
            .env("LEDGER_INTERNAL_SECRET", TEST_SECRET)
            .env("OWNERSHIP_HEARTBEAT_MS", t.heartbeat_ms.to_string())
            .env("OWNERSHIP_ELECTION_MIN_MS", t.election_min_ms.to_string())
            .env("OWNERSHIP_ELECTION_MAX_MS", t.election_max_ms.to_string())
            .env("OWNERSHIP_SNAPSHOT_EVERY", t.snapshot_every.to_string())
            .env(
                "OWNERSHIP_COMMIT_TIMEOUT_MS",
                t.commit_timeout_ms.to_string(),
            );
        if std::env::var_os("LEDGER_LOG").is_none() {
            command.env("LEDGER_LOG", "info,openraft=warn");
        }
        let name = format!("voter-{}", voter.id);
        let guard = ChildGuard::spawn(&name, command, &voter.log, Signal::SIGTERM)?;
        self.voters[index].process = Some(guard);
        Ok(())
    }

    async fn wait_serving(&mut self, index: usize) -> Result<(), HarnessError> {
        let url = format!("http://{}/healthz", self.voters[index].addr());
        match self.voters[index].process.as_mut() {
            Some(process) => wait_http_ready(process, &url, Duration::from_secs(30)).await,
            None => Ok(()),
        }
    }

    /// Sends `signal` to voter `index` (SIGKILL also forgets the process).
    pub fn signal(&mut self, index: usize, signal: Signal) -> Result<(), HarnessError> {
        let Some(process) = self.voters[index].process.as_mut() else {
            return Ok(());
        };
        if signal == Signal::SIGKILL {
            process.signal(Signal::SIGKILL)?;
            // Reap it so its port is free for a restart.
            let _ = process.stop();
            self.voters[index].process = None;
            return Ok(());
        }
        process.signal(signal)
    }

    /// Stops voter `index` gracefully (SIGTERM, then SIGKILL after the guard's grace).
    pub fn stop(&mut self, index: usize) -> Option<String> {
        self.voters[index].process.take().and_then(|mut p| p.stop())
    }

    /// Starts voter `index` again on its data dir and port.
    pub async fn restart(&mut self, index: usize) -> Result<(), HarnessError> {
        self.spawn(index)?;
        self.wait_serving(index).await
    }

    /// Waits until the listed voters agree on a leader that is one of them, and
    /// returns its node id.
    pub async fn wait_leader(
        &self,
        among: &[usize],
        timeout: Duration,
    ) -> Result<u64, HarnessError> {
        let addrs: Vec<String> = among.iter().map(|&i| self.voters[i].addr()).collect();
        let ids: Vec<u64> = among.iter().map(|&i| self.voters[i].id).collect();
        let client = OwnershipClient::new(addrs.clone(), "harness", TEST_SECRET).map_err(|e| {
            HarnessError::Command {
                what: "make an ownership client".into(),
                detail: e.to_string(),
            }
        })?;
        let leader = wait_until(timeout, Duration::from_millis(20), || {
            let addrs = addrs.clone();
            let ids = ids.clone();
            let client = &client;
            async move {
                let mut seen = None;
                for addr in addrs {
                    let status = client.cluster_status(&addr).await.ok()?;
                    let leader = status.current_leader?;
                    if seen.is_some_and(|s| s != leader) {
                        return None;
                    }
                    seen = Some(leader);
                }
                seen.filter(|leader| ids.contains(leader))
            }
        })
        .await;
        leader.ok_or_else(|| HarnessError::Timeout {
            what: "an agreed Raft leader".into(),
            waited: timeout,
            log: None,
        })
    }

    /// Index of the voter with node id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.voters.iter().position(|v| v.id == id)
    }
}
