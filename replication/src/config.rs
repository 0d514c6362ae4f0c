//! Configuration of a replicator (relay and appliers of one region), from flags or
//! `LEDGER_*` environment variables.

use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use ledger_wire::valid_region_name;

use crate::ReplicationError;

/// A remote region to apply events from: `name=host:port[,host:port]` (its broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRegion {
    pub name: String,
    pub brokers: String,
}

impl FromStr for RemoteRegion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, brokers) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not name=host:port"))?;
        if !valid_region_name(name) || brokers.is_empty() {
            return Err(format!("{text:?} is not name=host:port"));
        }
        Ok(RemoteRegion {
            name: name.to_owned(),
            brokers: brokers.to_owned(),
        })
    }
}

/// Seven days: longer than any region stays down before it is rebuilt.
pub const DEFAULT_TOPIC_RETENTION_MS: u64 = 7 * 24 * 3_600 * 1_000;

#[derive(Debug, Clone, Args)]
pub struct ReplicatorConfig {
    /// The region this replicator serves (its database, its broker).
    #[arg(long, env = "LEDGER_REGION")]
    pub region: String,

    /// PostgreSQL connection string of this region's database (migrated by region-node).
    #[arg(long, env = "LEDGER_DATABASE_URL")]
    pub database_url: String,

    /// TLS to the database (managed PostgreSQL): `--database-tls verify-full` with the
    /// provider's CA in `--database-ca-file`.
    #[command(flatten)]
    pub database_tls: db_tls::DbTlsArgs,

    /// This region's Kafka bootstrap servers: the relay publishes here and the appliers
    /// dead-letter here. Every Kafka client also takes any librdkafka property as
    /// LEDGER_KAFKA_<PROPERTY> (dots as underscores): LEDGER_KAFKA_SECURITY_PROTOCOL=SASL_SSL,
    /// LEDGER_KAFKA_SASL_MECHANISM, LEDGER_KAFKA_SASL_USERNAME, LEDGER_KAFKA_SASL_PASSWORD,
    /// LEDGER_KAFKA_SSL_CA_LOCATION.
    #[arg(long, env = "LEDGER_BROKERS")]
    pub brokers: String,

    /// Run the outbox relay (one is active per region; others stand by).
    #[arg(long, env = "LEDGER_RELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay: bool,

    /// Remote regions to apply events from, as `name=host:port` (repeat, or comma-free
    /// entries separated by spaces in the environment variable).
    #[arg(long = "apply-from", env = "LEDGER_APPLY_FROM", value_delimiter = ' ')]
    pub apply_from: Vec<RemoteRegion>,

    /// Partitions of the topics this replicator creates when they are missing.
    #[arg(long, env = "LEDGER_TOPIC_PARTITIONS", default_value_t = 4)]
    pub topic_partitions: i32,

    /// Events older than this are deleted from this region's events topic by the
    /// broker's retention pass (`cleanup.policy=delete`, `retention.ms`), set when the
    /// relay creates the topic; 0 keeps them forever. Appliers further behind than this
    /// lose events: they raise `ledger_replication_offsets_skipped_total`, never skip
    /// silently. The DLQ topic keeps its letters.
    #[arg(long, env = "LEDGER_TOPIC_RETENTION_MS", default_value_t = DEFAULT_TOPIC_RETENTION_MS)]
    pub topic_retention_ms: u64,

    /// Outbox rows the relay reads per query.
    #[arg(long, env = "LEDGER_RELAY_BATCH", default_value_t = 500)]
    pub relay_batch: i64,

    /// Events the relay may have sent but not yet seen acknowledged.
    #[arg(long, env = "LEDGER_RELAY_WINDOW", default_value_t = 10_000)]
    pub relay_window: usize,

    /// The relay polls the outbox this often even without a notification, in ms.
    #[arg(long, env = "LEDGER_RELAY_POLL_MS", default_value_t = 1_000)]
    pub relay_poll_ms: u64,

    /// After a read that found rows, the relay reads again after this long without
    /// waiting for a notification, in ms.
    #[arg(long, env = "LEDGER_RELAY_BUSY_POLL_MS", default_value_t = 2)]
    pub relay_busy_poll_ms: u64,

    /// A standby relay retries the lock this often, in ms.
    #[arg(long, env = "LEDGER_RELAY_STANDBY_POLL_MS", default_value_t = 500)]
    pub standby_poll_ms: u64,

    /// The producer's linger (batching delay), in ms.
    #[arg(long, env = "LEDGER_PRODUCER_LINGER_MS", default_value_t = 1)]
    pub linger_ms: u64,

    /// Published outbox rows are deleted after this long, in seconds.
    #[arg(long, env = "LEDGER_OUTBOX_RETENTION_S", default_value_t = 3_600)]
    pub outbox_retention_s: u64,

    /// Idempotency records are deleted after this long, in seconds (a retry after that
    /// is a new request).
    #[arg(long, env = "LEDGER_IDEMPOTENCY_RETENTION_S", default_value_t = 72 * 3_600)]
    pub idempotency_retention_s: u64,

    /// How often the active relay deletes expired rows, in seconds.
    #[arg(long, env = "LEDGER_CLEANUP_INTERVAL_S", default_value_t = 60)]
    pub cleanup_interval_s: u64,

    /// Most events an applier applies in one database transaction.
    #[arg(long, env = "LEDGER_APPLY_BATCH", default_value_t = 500)]
    pub apply_batch: usize,

    /// An applier that received nothing for this long stops fetching and only asks its
    /// origin's broker for the partitions' ends every `--apply-idle-poll-ms` (see
    /// `applier::pacing`), in ms; 0 fetches all the time.
    #[arg(long, env = "LEDGER_APPLY_IDLE_AFTER_MS", default_value_t = 2_000)]
    pub apply_idle_after_ms: u64,

    /// How often an idle applier asks its origin for the partitions' ends, in ms: the
    /// most a quiet origin's first event waits before it is fetched.
    #[arg(long, env = "LEDGER_APPLY_IDLE_POLL_MS", default_value_t = 250)]
    pub apply_idle_poll_ms: u64,

    /// Also commit applied offsets to the origin broker's consumer group (for standard
    /// lag tools); the database holds the positions that count either way.
    #[arg(long, env = "LEDGER_COMMIT_OFFSETS_TO_BROKER", default_value_t = false, action = clap::ArgAction::Set)]
    pub commit_offsets_to_broker: bool,

    /// An event waiting for an earlier seq this long is reported (log line and metric).
    #[arg(long, env = "LEDGER_GAP_ALERT_S", default_value_t = 30)]
    pub gap_alert_s: u64,

    /// How long tasks may take to finish after a shutdown signal, in ms.
    #[arg(long, env = "LEDGER_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// The deployment's internal secret: the failover tool signs its calls to this
    /// replicator's `/internal/v1/dlq` routes with it. Without it those routes refuse
    /// every call.
    #[arg(long, env = "LEDGER_INTERNAL_SECRET", hide_env_values = true)]
    pub internal_secret: Option<Secret>,
}

/// A secret that never shows in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() < 16 {
            return Err("the internal secret must be at least 16 characters".into());
        }
        Ok(Secret(text.to_owned()))
    }
}

impl ReplicatorConfig {
    /// Defaults as above, for tests and tools that embed a replicator.
    pub fn new(
        region: impl Into<String>,
        database_url: impl Into<String>,
        brokers: impl Into<String>,
    ) -> Self {
        ReplicatorConfig {
            region: region.into(),
            database_url: database_url.into(),
            database_tls: db_tls::DbTlsArgs::default(),
            brokers: brokers.into(),
            relay: true,
            apply_from: Vec::new(),
            topic_partitions: 4,
            topic_retention_ms: DEFAULT_TOPIC_RETENTION_MS,
            relay_batch: 500,
            relay_window: 10_000,
            relay_poll_ms: 1_000,
            relay_busy_poll_ms: 2,
            standby_poll_ms: 500,
            linger_ms: 1,
            outbox_retention_s: 3_600,
            idempotency_retention_s: 72 * 3_600,
            cleanup_interval_s: 60,
            apply_batch: 500,
            apply_idle_after_ms: 2_000,
            apply_idle_poll_ms: 250,
            commit_offsets_to_broker: false,
            gap_alert_s: 30,
            shutdown_grace_ms: 10_000,
            internal_secret: None,
        }
    }

    pub fn validate(&self) -> Result<(), ReplicationError> {
        let bad = |what: String| Err(ReplicationError::Config(what));
        if !valid_region_name(&self.region) {
            return bad(format!(
                "region {:?}: use 1-32 lower-case letters, digits, dashes",
                self.region
            ));
        }
        if let Some(remote) = self.apply_from.iter().find(|r| r.name == self.region) {
            return bad(format!(
                "--apply-from names this region ({}); appliers read other regions only",
                remote.name
            ));
        }
        let mut names: Vec<&str> = self.apply_from.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return bad("--apply-from names a region twice".into());
        }
        if self.brokers.is_empty() {
            return bad("--brokers is empty".into());
        }
        if self.relay_batch < 1 || self.apply_batch < 1 || self.relay_window < 1 {
            return bad("batch sizes and the relay window must be at least 1".into());
        }
        if self.apply_idle_poll_ms < 1 {
            return bad("--apply-idle-poll-ms must be at least 1".into());
        }
        if self.topic_partitions < 1 {
            return bad("--topic-partitions must be at least 1".into());
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remote_regions() {
        let remote: RemoteRegion = "us-east=127.0.0.1:9093".parse().expect("valid");
        assert_eq!(remote.name, "us-east");
        assert_eq!(remote.brokers, "127.0.0.1:9093");
        for bad in ["", "us", "=h:1", "US=h:1", "us="] {
            assert!(bad.parse::<RemoteRegion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_applying_from_itself_or_twice() {
        let mut config = ReplicatorConfig::new("a", "postgres://x", "h:1");
        config.apply_from = vec!["a=h:2".parse().expect("valid")];
        assert!(config.validate().is_err());
        config.apply_from = vec![
            "b=h:2".parse().expect("valid"),
            "b=h:3".parse().expect("valid"),
        ];
        assert!(config.validate().is_err());
        config.apply_from.pop();
        assert!(config.validate().is_ok());
    }
}
