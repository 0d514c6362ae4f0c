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

    /// TLS to the database (managed PostgreSQL): `--database-tls verify-full` with the
    /// provider's CA in `--database-ca-file`.
    #[command(flatten)]
    pub database_tls: db_tls::DbTlsArgs,

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

    /// The API key file (`failover keys new` writes it; only hashes). When set, every
    /// public route but health, readiness, metrics and /openapi.json needs
    /// `Authorization: Bearer <key>`; unset, the public API is open (development only).
    #[arg(long, env = "LEDGER_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// Requests per second each API key may make (a token bucket per key, per region).
    #[arg(long, env = "LEDGER_API_RATE_PER_KEY", default_value_t = 1_000)]
    pub api_rate_per_key: u32,

    /// Burst each API key may make above its rate.
    #[arg(long, env = "LEDGER_API_BURST_PER_KEY", default_value_t = 2_000)]
    pub api_burst_per_key: u32,

    /// Least time between two wake-ups of the outbox relay (writes in between share one),
    /// in ms.
    #[arg(long, env = "LEDGER_OUTBOX_NOTIFY_INTERVAL_MS", default_value_t = 20)]
    pub outbox_notify_interval_ms: u64,

    /// Ownership service voters (`host:port`, comma-separated). Empty: single-region
    /// mode, every slot owned at the static epoch.
    #[arg(long, env = "LEDGER_OWNERSHIP_VOTERS", value_delimiter = ',')]
    pub ownership_voters: Vec<String>,

    /// Follow ownership changes through the service's watch (off: learn them only from
    /// lease renewals and refusals; for tests of stale caches).
    #[arg(long, env = "LEDGER_OWNERSHIP_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub ownership_watch: bool,

    /// Other regions' nodes for forwarding and the internal API:
    /// `region=http://host:port`, comma-separated.
    #[arg(long, env = "LEDGER_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,

    /// Every region's public API as clients reach it, `region=https://host`,
    /// comma-separated (this region's too): what `GET /v1/regions` answers, so a
    /// client that knows one region finds the others.
    #[arg(long, env = "LEDGER_PUBLIC_URLS", value_delimiter = ',')]
    pub public_urls: Vec<String>,

    /// Serve HTTPS (public and internal routes) with this certificate chain (PEM);
    /// with --tls-key-file.
    #[arg(long, env = "LEDGER_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "LEDGER_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// CA (PEM) that signed the other regions' node certificates, for `https://` peers;
    /// default: the system's roots.
    #[arg(long, env = "LEDGER_PEER_CA_FILE")]
    pub peer_ca_file: Option<std::path::PathBuf>,

    /// Shared secret of the deployment that signs internal (region-to-region) requests.
    #[arg(long, env = "LEDGER_INTERNAL_SECRET", hide_env_values = true)]
    pub internal_secret: Option<String>,

    /// A write starts only if the lease has at least this long left, in ms (the
    /// database checks the lease again at commit).
    #[arg(long, env = "LEDGER_LEASE_WRITE_MARGIN_MS", default_value_t = 500)]
    pub lease_write_margin_ms: u64,

    /// Expiry recorded in the database is this much earlier than the lease's, in ms.
    #[arg(long, env = "LEDGER_LEASE_COMMIT_MARGIN_MS", default_value_t = 100)]
    pub lease_commit_margin_ms: u64,

    /// Largest clock-rate drift between machines assumed by the fencing delay.
    #[arg(long, env = "LEDGER_MAX_CLOCK_DRIFT", default_value_t = 0.01)]
    pub max_clock_drift: f64,

    /// Added to ttl * (1 + drift) in the fencing delay after an unplanned gain, in ms.
    #[arg(long, env = "LEDGER_FENCE_MARGIN_MS", default_value_t = 500)]
    pub fence_margin_ms: u64,

    /// How long a forwarded request may take at the home region, in ms.
    #[arg(long, env = "LEDGER_FORWARD_TIMEOUT_MS", default_value_t = 5_000)]
    pub forward_timeout_ms: u64,

    /// How long an `ack: replicated` write waits for another region's copy, in ms.
    #[arg(long, env = "LEDGER_ACK_TIMEOUT_MS", default_value_t = 5_000)]
    pub ack_timeout_ms: u64,

    /// How long a `min_seq` read waits for the local copy before asking the home, in ms.
    #[arg(long, env = "LEDGER_MIN_SEQ_WAIT_MS", default_value_t = 500)]
    pub min_seq_wait_ms: u64,

    /// Fallback poll of the transfer saga worker when no notification arrives, in ms.
    #[arg(long, env = "LEDGER_SAGA_POLL_MS", default_value_t = 1_000)]
    pub saga_poll_ms: u64,

    /// How often the reconciler looks for late events of accounts homed here, in ms.
    #[arg(long, env = "LEDGER_RECONCILE_POLL_MS", default_value_t = 500)]
    pub reconcile_poll_ms: u64,

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
            database_tls: db_tls::DbTlsArgs::default(),
            db_pool_size: 16,
            slot_count: 4096,
            static_epoch: 1,
            statement_timeout_ms: 2_000,
            idle_in_transaction_timeout_ms: 1_000,
            pool_wait_ms: 5_000,
            max_body_bytes: 16 * 1024,
            api_keys_file: None,
            api_rate_per_key: 1_000,
            api_burst_per_key: 2_000,
            outbox_notify_interval_ms: 20,
            ownership_voters: Vec::new(),
            ownership_watch: true,
            peers: Vec::new(),
            public_urls: Vec::new(),
            internal_secret: None,
            tls_cert_file: None,
            tls_key_file: None,
            peer_ca_file: None,
            lease_write_margin_ms: 500,
            lease_commit_margin_ms: 100,
            max_clock_drift: 0.01,
            fence_margin_ms: 500,
            forward_timeout_ms: 5_000,
            ack_timeout_ms: 5_000,
            min_seq_wait_ms: 500,
            saga_poll_ms: 1_000,
            reconcile_poll_ms: 500,
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
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(NodeError::Config(
                "give both --tls-cert-file and --tls-key-file, or neither".into(),
            ));
        }
        if self.api_rate_per_key == 0 || self.api_burst_per_key == 0 {
            return Err(NodeError::Config(
                "the API rate and burst per key must be at least 1".into(),
            ));
        }
        if self.db_pool_size == 0 {
            return Err(NodeError::Config("db pool size must be at least 1".into()));
        }
        if self.static_epoch < 1 {
            return Err(NodeError::Config("static epoch must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.max_clock_drift) {
            return Err(NodeError::Config(
                "max clock drift must be in [0, 1)".into(),
            ));
        }
        let peers = self.peer_urls()?;
        if !peers.is_empty() && self.internal_secret.as_deref().is_none_or(str::is_empty) {
            return Err(NodeError::Config(
                "peers are configured but no internal secret (LEDGER_INTERNAL_SECRET)".into(),
            ));
        }
        if !self.ownership_voters.is_empty()
            && self.internal_secret.as_deref().is_none_or(str::is_empty)
        {
            return Err(NodeError::Config(
                "ownership voters are configured but no internal secret (LEDGER_INTERNAL_SECRET): voters refuse unsigned calls".into(),
            ));
        }
        if self.internal_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(NodeError::Config(
                "the internal secret must be at least 16 characters".into(),
            ));
        }
        Ok(())
    }

    /// `(region, base url)` of every peer.
    pub fn peer_urls(&self) -> Result<Vec<(String, String)>, NodeError> {
        self.peers
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let (region, url) = p.split_once('=').ok_or_else(|| {
                    NodeError::Config(format!("peer {p:?} must look like region=http://host:port"))
                })?;
                if !ledger_wire::valid_region_name(region) || region == self.region {
                    return Err(NodeError::Config(format!(
                        "peer region {region:?} is not valid"
                    )));
                }
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(NodeError::Config(format!(
                        "peer url {url:?} must be http(s)"
                    )));
                }
                Ok((region.to_owned(), url.trim_end_matches('/').to_owned()))
            })
            .collect()
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}
