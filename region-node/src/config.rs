//! Configuration of a region node, from flags or `LEDGER_*` environment variables.

use std::time::Duration;

use clap::Args;
use ledger_wire::MAX_SLOTS;

use crate::NodeError;

#[derive(Debug, Clone, Args)]
pub struct NodeConfig {
    /// Name of the region this node serves (lower-case letters, digits, dashes).
    #[arg(long, env = "LEDGER_REGION")]
    pub region: String,

    /// PostgreSQL connection string of this region's database.
    #[arg(long, env = "LEDGER_DATABASE_URL")]
    pub database_url: String,

    /// Connections in the database pool.
    #[arg(long, env = "LEDGER_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// Number of ownership slots of the deployment (fixed when the cluster is created).
    #[arg(long, env = "LEDGER_SLOT_COUNT", default_value_t = 4096)]
    pub slot_count: u32,

    /// Ownership epoch this node writes with while it owns every slot by configuration
    /// (before the ownership service takes over).
    #[arg(long, env = "LEDGER_STATIC_EPOCH", default_value_t = 1)]
    pub static_epoch: i64,

    /// Server-side statement timeout of the node's database sessions, in milliseconds.
    #[arg(long, env = "LEDGER_STATEMENT_TIMEOUT_MS", default_value_t = 2_000)]
    pub statement_timeout_ms: u64,

    /// The database aborts a transaction left idle this long (a paused node cannot hold
    /// one open past the safety margin), in milliseconds.
    #[arg(long, env = "LEDGER_IDLE_IN_TX_TIMEOUT_MS", default_value_t = 1_000)]
    pub idle_in_transaction_timeout_ms: u64,

    /// How long a request waits for a free database connection before a 503, in ms.
    #[arg(long, env = "LEDGER_POOL_WAIT_MS", default_value_t = 5_000)]
    pub pool_wait_ms: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "LEDGER_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Least time between two wake-ups of the outbox relay (writes in between share one),
    /// in ms.
    #[arg(long, env = "LEDGER_OUTBOX_NOTIFY_INTERVAL_MS", default_value_t = 20)]
    pub outbox_notify_interval_ms: u64,

    /// How long in-flight requests may take to finish after a shutdown signal, in ms.
    #[arg(long, env = "LEDGER_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
}

impl NodeConfig {
    /// A configuration with the defaults above, for tests and tools that embed a node.
    pub fn new(region: impl Into<String>, database_url: impl Into<String>) -> Self {
        NodeConfig {
            region: region.into(),
            database_url: database_url.into(),
            db_pool_size: 16,
            slot_count: 4096,
            static_epoch: 1,
            statement_timeout_ms: 2_000,
            idle_in_transaction_timeout_ms: 1_000,
            pool_wait_ms: 5_000,
            max_body_bytes: 16 * 1024,
            outbox_notify_interval_ms: 20,
            shutdown_grace_ms: 10_000,
        }
    }

    pub fn validate(&self) -> Result<(), NodeError> {
        let name_ok = ledger_wire::valid_region_name(&self.region);
        if !name_ok {
            return Err(NodeError::Config(format!(
                "region {:?} must be 1-32 characters of a-z, 0-9 and '-'",
                self.region
            )));
        }
        if self.slot_count == 0 || self.slot_count > MAX_SLOTS {
            return Err(NodeError::Config(format!(
                "slot count {} must be between 1 and {MAX_SLOTS}",
                self.slot_count
            )));
        }
        if self.db_pool_size == 0 {
            return Err(NodeError::Config("db pool size must be at least 1".into()));
        }
        if self.static_epoch < 1 {
            return Err(NodeError::Config("static epoch must be at least 1".into()));
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}
