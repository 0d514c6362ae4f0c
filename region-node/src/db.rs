//! The region's PostgreSQL: connection pool with the node's session settings, and the
//! schema migration (the `ledger-schema` crate).

use std::time::Duration;

use db_tls::DbTls;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::{NodeConfig, NodeError};

/// Connection settings of every session of this node, and its TLS set-up (the mode is
/// already applied to the settings; the connector goes to `connect`).
pub fn connection(config: &NodeConfig) -> Result<(tokio_postgres::Config, DbTls), NodeError> {
    let tls = DbTls::new(&config.database_tls)
        .map_err(|e| NodeError::Config(format!("database TLS: {e}")))?;
    let mut pg: tokio_postgres::Config = config
        .database_url
        .parse()
        .map_err(|e| NodeError::Config(format!("database url: {e}")))?;
    // Session settings every write relies on: bounded statements, open transactions of a
    // paused node aborted by the server, timestamps rendered in UTC, and a fixed
    // search_path: the default `"$user", public` would resolve unqualified names (such as
    // refinery's history table) into the `ledger` schema when the role is also named
    // `ledger`, so a restart would think no migration had run.
    pg.options(format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={} -c TimeZone=UTC \
         -c search_path=public",
        config.statement_timeout_ms, config.idle_in_transaction_timeout_ms
    ));
    pg.application_name(format!("region-node/{}", config.region));
    pg.connect_timeout(Duration::from_secs(5));
    tls.configure(&mut pg);
    Ok((pg, tls))
}

pub fn pool(config: &NodeConfig) -> Result<Pool, NodeError> {
    let (pg, tls) = connection(config)?;
    let manager = Manager::from_config(
        pg,
        tls.connector(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.db_pool_size)
        .wait_timeout(Some(Duration::from_millis(config.pool_wait_ms)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| NodeError::Config(format!("database pool: {e}")))
}

/// Brings the schema to this build (`ledger_schema::migrate`: versioned DDL, then the
/// current text of every function, under an advisory lock so that nodes starting
/// together against one database do not race).
pub async fn migrate(config: &NodeConfig) -> Result<(), NodeError> {
    let (pg, tls) = connection(config)?;
    let (mut client, connection) = pg.connect(tls.connector()).await?;
    let driver = tokio::spawn(connection);
    let migrated = ledger_schema::migrate(&mut client)
        .await
        .map_err(NodeError::from);
    drop(client);
    // The connection task ends once the client is gone; its result carries nothing new.
    let _ = driver.await;
    migrated.map(|_| ())
}

/// Records, in the database, that this region holds `slots` at `epoch` until
/// `valid_for` from now by the database's clock (`None`: without expiry), and drops
/// every other slot. Write functions check this table as their last statement.
pub async fn record_leases(
    pool: &Pool,
    slot_count: u32,
    epoch: i64,
    valid_for: Option<Duration>,
) -> Result<(), NodeError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let slots = i32::try_from(slot_count).map_err(|_| NodeError::Config("slot count".into()))?;
    let valid_ms = valid_for.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    tx.execute("DELETE FROM ledger.slot_leases WHERE slot >= $1", &[&slots])
        .await?;
    tx.execute(
        "INSERT INTO ledger.slot_leases (slot, epoch, expires_at)
         SELECT s, $2, CASE WHEN $3::bigint IS NULL THEN 'infinity'::timestamptz
                            ELSE clock_timestamp() + make_interval(secs => $3::bigint / 1000.0) END
         FROM generate_series(0, $1 - 1) AS s
         ON CONFLICT (slot) DO UPDATE SET epoch = EXCLUDED.epoch, expires_at = EXCLUDED.expires_at",
        &[&slots, &epoch, &valid_ms],
    )
    .await?;
    tx.commit().await.map_err(NodeError::Database)
}
