//! Voter configuration: command-line flags with `OWNERSHIP_*` environment fallbacks.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::types::NodeId;

/// Shortest deployment secret a voter accepts (the same rule as region nodes').
pub const MIN_SECRET_LEN: usize = 16;
use crate::OwnershipError;

/// One voter of the initial cluster: `id=host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterAddr {
    pub id: NodeId,
    pub addr: String,
}

impl FromStr for VoterAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not id=host:port"))?;
        let id = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a node id (a positive number)"))?;
        let addr = addr.trim();
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!("{addr:?} is not host:port"));
        }
        Ok(VoterAddr {
            id,
            addr: addr.to_owned(),
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct VoterConfig {
    /// This voter's node id (unique in the cluster, above 0).
    #[arg(long, env = "OWNERSHIP_NODE_ID")]
    pub node_id: NodeId,

    /// Directory for the Raft log, vote and snapshots.
    #[arg(long, env = "OWNERSHIP_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The voters of a new cluster, `1=host:port,2=host:port,...`, the same list on
    /// every voter. Ignored once the data dir holds a cluster.
    #[arg(long, env = "OWNERSHIP_BOOTSTRAP_VOTERS", value_delimiter = ',')]
    pub bootstrap_voters: Vec<VoterAddr>,

    /// Leader heartbeat interval.
    #[arg(long, env = "OWNERSHIP_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,

    /// Lower bound of the randomised election timeout.
    #[arg(long, env = "OWNERSHIP_ELECTION_MIN_MS", default_value_t = 300)]
    pub election_min_ms: u64,

    /// Upper bound of the randomised election timeout.
    #[arg(long, env = "OWNERSHIP_ELECTION_MAX_MS", default_value_t = 600)]
    pub election_max_ms: u64,

    /// Build a snapshot (and purge the log before it) after this many new entries.
    #[arg(long, env = "OWNERSHIP_SNAPSHOT_EVERY", default_value_t = 5000)]
    pub snapshot_every: u64,

    /// Entries kept in the log behind the latest snapshot, for slow followers.
    #[arg(long, env = "OWNERSHIP_KEEP_LOGS", default_value_t = 1000)]
    pub keep_logs: u64,

    /// How long a command may wait for its commit before the client is told the
    /// outcome is unknown (this voter may be cut off from the majority).
    #[arg(long, env = "OWNERSHIP_COMMIT_TIMEOUT_MS", default_value_t = 3000)]
    pub commit_timeout_ms: u64,

    /// The deployment's shared secret (at least 16 characters). Every request but
    /// health and metrics must be signed with it: Raft RPCs between voters, and the
    /// commands and reads of nodes and the failover tool.
    #[arg(long, env = "LEDGER_INTERNAL_SECRET", hide_env_values = true)]
    pub internal_secret: String,

    /// Grace period for in-flight requests on shutdown.
    #[arg(long, env = "OWNERSHIP_SHUTDOWN_GRACE_MS", default_value_t = 5000)]
    pub shutdown_grace_ms: u64,
}

impl VoterConfig {
    pub fn validate(&self) -> Result<(), OwnershipError> {
        if self.node_id == 0 {
            return Err(OwnershipError::Config("node id must be above 0".into()));
        }
        if self.election_min_ms <= self.heartbeat_ms * 2
            || self.election_max_ms <= self.election_min_ms
        {
            return Err(OwnershipError::Config(
                "need heartbeat * 2 < election min < election max".into(),
            ));
        }
        if self.internal_secret.len() < MIN_SECRET_LEN {
            return Err(OwnershipError::Config(format!(
                "the internal secret must be at least {MIN_SECRET_LEN} characters (LEDGER_INTERNAL_SECRET)"
            )));
        }
        if !self.bootstrap_voters.is_empty()
            && !self.bootstrap_voters.iter().any(|v| v.id == self.node_id)
        {
            return Err(OwnershipError::Config(format!(
                "bootstrap voters do not include this voter ({})",
                self.node_id
            )));
        }
        Ok(())
    }

    pub fn raft_config(&self) -> Result<openraft::Config, OwnershipError> {
        openraft::Config {
            cluster_name: "ledger-ownership".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: 1024 * 1024,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            ..Default::default()
        }
        .validate()
        .map_err(|e| OwnershipError::Config(e.to_string()))
    }

    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}
