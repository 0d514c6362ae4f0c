//! The regional ledger server.
//!
//! [`run`] is the whole node: it migrates the region's database, records the slot
//! leases the region holds, and serves the public API on the given listener until the
//! shutdown token is cancelled, then drains in-flight requests for the grace period.
//! Tests and tools drive it in-process; the `region-node` binary wraps it with config,
//! logging and signals.

pub mod config;
pub mod db;
pub mod error;
pub mod home;
pub mod http;
pub mod late_handoff;
pub mod metrics;
pub mod outbox_notify;
pub mod passes;
pub mod peers;
pub mod replica_reads;
pub mod saga;
pub mod sre;
pub mod store;

pub use service_kit::{supervisor, telemetry};

use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::NodeConfig;
pub use error::NodeError;
pub use store::POST_ENTRY_SQL;

use crate::home::Ownership;
use crate::store::LedgerStore;
use crate::supervisor::Supervisor;

/// How long the node keeps retrying its database at start-up before giving up.
const DATABASE_START_DEADLINE: Duration = Duration::from_secs(60);

/// Runs a region node on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    config.validate()?;
    migrate_when_reachable(&config, &shutdown).await?;
    let pool = db::pool(&config)?;
    let metrics = metrics::Metrics::new(&config.region);
    let outbox_written = Arc::new(tokio::sync::Notify::new());
    let mut supervisor = Supervisor::new(shutdown.clone());
    let ownership = if config.ownership_voters.is_empty() {
        db::record_leases(&pool, config.slot_count, config.static_epoch, None).await?;
        Arc::new(Ownership::static_all(
            config.region.clone(),
            config.slot_count,
            config.static_epoch,
        ))
    } else {
        join_ownership(&config, &pool, &metrics, &mut supervisor, &shutdown).await?
    };
    let peer_urls = config.peer_urls()?;
    let peer_tls = if peer_urls.iter().any(|(_, url)| url.starts_with("https://")) {
        let roots = ledger_tls::roots(config.peer_ca_file.as_deref())
            .map_err(|e| NodeError::Config(format!("peers' TLS: {e}")))?;
        Some(
            ledger_tls::client_config(roots)
                .map_err(|e| NodeError::Config(format!("peers' TLS: {e}")))?,
        )
    } else {
        None
    };
    let peers = Arc::new(peers::Peers::new(
        &config.region,
        config.internal_secret.as_deref(),
        peer_urls,
        peer_tls,
    ));
    let api_keys = load_api_keys(&config, &mut supervisor, &shutdown)?;
    let settings = http::Settings {
        api_keys,
        max_body_bytes: config.max_body_bytes,
        forward_timeout: Duration::from_millis(config.forward_timeout_ms),
        ack_timeout: Duration::from_millis(config.ack_timeout_ms),
        min_seq_wait: Duration::from_millis(config.min_seq_wait_ms),
        public_urls: public_urls(&config.public_urls)?,
    };
    let app = http::router(
        LedgerStore::new(pool.clone(), outbox_written.clone()),
        ownership.clone(),
        peers.clone(),
        metrics.clone(),
        shutdown.clone(),
        settings,
    );
    let address = listener.local_addr().map_err(NodeError::Serve)?;
    tracing::info!(
        region = %config.region,
        %address,
        ownership = if ownership.is_dynamic() { "service" } else { "static" },
        "region node serving"
    );

    let stop = shutdown.clone();
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = ledger_tls::server_config(cert, key)
                .map_err(|e| NodeError::Config(format!("TLS: {e}")))?;
            let listener = ledger_tls::TlsListener::new(listener, tls).map_err(NodeError::Serve)?;
            supervisor.spawn("https", serve(listener, app, stop));
        }
        _ => {
            // Answers go out at once, not behind Nagle's wait for an ACK (axum's plain
            // listener leaves TCP_NODELAY off).
            let listener = listener.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            supervisor.spawn("http", serve(listener, app, stop))
        }
    }
    supervisor.spawn(
        "saga",
        saga::run(
            pool.clone(),
            db::connection(&config)?,
            config.region.clone(),
            Duration::from_millis(config.saga_poll_ms),
            outbox_written.clone(),
            metrics.clone(),
            shutdown.clone(),
        ),
    );
    // Only with an ownership service does one region own an account; in static mode
    // every node believes it owns every slot, so none may reconcile.
    if ownership.is_dynamic() {
        supervisor.spawn(
            "reconciler",
            sre::late::reconciler(
                pool.clone(),
                config.region.clone(),
                Duration::from_millis(config.reconcile_poll_ms),
                outbox_written.clone(),
                metrics.clone(),
                shutdown.clone(),
            ),
        );
        let handoff = late_handoff::Handoff {
            pool: pool.clone(),
            ownership: ownership.clone(),
            peers: peers.clone(),
            metrics,
            poll: Duration::from_millis(config.reconcile_poll_ms.max(1_000)),
        };
        supervisor.spawn("late-handoff", handoff.run(shutdown.clone()));
    }
    supervisor.spawn(
        "outbox-notify",
        outbox_notify::run(
            pool,
            outbox_written,
            Duration::from_millis(config.outbox_notify_interval_ms),
            shutdown.clone(),
        ),
    );
    supervisor.run(config.shutdown_grace()).await?;
    tracing::info!("region node stopped");
    Ok(())
}

/// Serves `app` on `listener` (plain or TLS) until `stop`, letting requests in flight end.
async fn serve<L>(listener: L, app: axum::Router, stop: CancellationToken) -> Result<(), NodeError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(NodeError::Serve)
}

/// `region=url` pairs of `--public-urls`.
fn public_urls(pairs: &[String]) -> Result<Vec<ledger_wire::api::RegionEndpoint>, NodeError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .filter(|(name, url)| !name.is_empty() && !url.is_empty())
                .map(|(name, url)| ledger_wire::api::RegionEndpoint {
                    name: name.to_owned(),
                    url: url.trim_end_matches('/').to_owned(),
                })
                .ok_or_else(|| NodeError::Config(format!("public URL {pair:?} is not region=url")))
        })
        .collect()
}

/// The public API's keys, re-read in the background when the file changes; `None`
/// (an open API, with a warning) when no key file is configured.
fn load_api_keys(
    config: &NodeConfig,
    supervisor: &mut Supervisor,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<http::ApiKeys>>, NodeError> {
    let Some(path) = config.api_keys_file.clone() else {
        tracing::warn!("no API key file (LEDGER_API_KEYS_FILE): the public API is open to anyone who reaches it");
        return Ok(None);
    };
    let non_zero = |n: u32| {
        std::num::NonZeroU32::new(n)
            .ok_or_else(|| NodeError::Config("API rate and burst must be at least 1".into()))
    };
    let keys = Arc::new(http::ApiKeys::load(
        path,
        non_zero(config.api_rate_per_key)?,
        non_zero(config.api_burst_per_key)?,
    )?);
    supervisor.spawn(
        "api-keys",
        http::watch_api_keys(keys.clone(), shutdown.clone()),
    );
    Ok(Some(keys))
}

/// Reads the ownership map, clears leases a previous run left in the database, and
/// starts the renewal and watch loops.
async fn join_ownership(
    config: &NodeConfig,
    pool: &deadpool_postgres::Pool,
    metrics: &metrics::Metrics,
    supervisor: &mut Supervisor,
    shutdown: &CancellationToken,
) -> Result<Arc<Ownership>, NodeError> {
    use home::sync;
    let client = ::ownership_client::OwnershipClient::new(
        config.ownership_voters.clone(),
        format!("region-node/{}", config.region),
        config.internal_secret.as_deref().unwrap_or_default(),
    )
    .map_err(|e| NodeError::Config(format!("ownership voters: {e}")))?
    .with_retry_for(Duration::from_secs(1));
    let client = Arc::new(client);
    let map = sync::initial_map(&client, DATABASE_START_DEADLINE, shutdown).await?;
    if map.slot_count != config.slot_count {
        tracing::warn!(
            configured = config.slot_count,
            cluster = map.slot_count,
            "slot count differs from the ownership cluster's; using the cluster's"
        );
    }
    if !map.regions.iter().any(|r| r.name == config.region) {
        return Err(NodeError::Config(format!(
            "region {} is not part of the ownership cluster",
            config.region
        )));
    }
    let timing = sync::LeaseTiming {
        max_clock_drift: config.max_clock_drift,
        fence_margin: Duration::from_millis(config.fence_margin_ms),
        commit_margin: Duration::from_millis(config.lease_commit_margin_ms),
    };
    let slot_count = map.slot_count;
    let ownership = Arc::new(Ownership::dynamic(
        config.region.clone(),
        map,
        Duration::from_millis(config.lease_write_margin_ms),
        timing,
        client.clone(),
    ));
    // Nothing is held until this run's first renewal answers.
    let nothing = home::LeaseState::empty(slot_count).snapshot();
    sync::record(pool, &nothing, timing.commit_margin).await?;
    supervisor.spawn(
        "lease-renewal",
        sync::renew_loop(
            ownership.clone(),
            client.clone(),
            pool.clone(),
            timing,
            metrics.clone(),
            shutdown.clone(),
        ),
    );
    if config.ownership_watch {
        supervisor.spawn(
            "ownership-watch",
            sync::watch_loop(ownership.clone(), client, shutdown.clone()),
        );
    }
    Ok(ownership)
}

/// Migrates the schema, retrying while the database is still starting.
async fn migrate_when_reachable(
    config: &NodeConfig,
    shutdown: &CancellationToken,
) -> Result<(), NodeError> {
    let deadline = tokio::time::Instant::now() + DATABASE_START_DEADLINE;
    loop {
        match db::migrate(config).await {
            Ok(()) => return Ok(()),
            Err(NodeError::Database(e)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %store::describe(&e), "database not reachable yet, retrying");
            }
            Err(other) => return Err(other),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(NodeError::Config("shut down while starting".into())),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
