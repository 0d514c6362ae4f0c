//! Periodic work on the region's database: backlog, waiting-event and dead-letter gauges
//! (with a log line for events stuck behind a gap), and the cleanup schedule (published outbox rows
//! and expired idempotency records).

use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::{db, Metrics, ReplicationError, ReplicatorConfig};

const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// Rows deleted per statement, so cleanup never holds long locks.
const CLEANUP_CHUNK: i64 = 5_000;
/// How often the dead letters still waiting are counted (one metadata and watermark
/// request to this region's broker).
const DLQ_COUNT_INTERVAL: Duration = Duration::from_secs(15);
/// A stuck gap is logged again at most this often.
const GAP_LOG_INTERVAL: Duration = Duration::from_secs(30);

pub async fn run(
    config: std::sync::Arc<ReplicatorConfig>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let mut last_cleanup = Instant::now();
    let mut last_gap_log: Option<Instant> = None;
    let mut last_dlq_count: Option<Instant> = None;
    let mut session: Option<db::Session> = None;
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if session.as_ref().is_none_or(|s| *s.closed.borrow()) {
            let application = format!("ledger-housekeeping/{}", config.region);
            match db::connect(&config, &application, None).await {
                Ok(connected) => session = Some(connected),
                Err(error) => {
                    tracing::debug!(%error, "housekeeping cannot reach the database yet");
                    continue;
                }
            }
        }
        let Some(client) = session.as_ref().map(|s| &s.client) else {
            continue;
        };
        let cleanup_due = config.relay
            && last_cleanup.elapsed() >= Duration::from_secs(config.cleanup_interval_s);
        let dlq_count_due = last_dlq_count.is_none_or(|at| at.elapsed() >= DLQ_COUNT_INTERVAL);
        let result = async {
            update_gauges(client, &config, &metrics, &mut last_gap_log).await?;
            if dlq_count_due {
                metrics
                    .dlq_waiting
                    .set(crate::dlq_admin::count_waiting(&config, client).await?);
                last_dlq_count = Some(Instant::now());
            }
            if cleanup_due {
                cleanup(client, &config, &metrics).await?;
            }
            Ok::<_, ReplicationError>(())
        }
        .await;
        match result {
            Ok(()) if cleanup_due => last_cleanup = Instant::now(),
            Ok(()) => {}
            Err(error) => tracing::debug!(%error, "housekeeping round failed; retrying"),
        }
    }
}

async fn update_gauges(
    client: &Client,
    config: &ReplicatorConfig,
    metrics: &Metrics,
    last_gap_log: &mut Option<Instant>,
) -> Result<(), ReplicationError> {
    let row = client
        .query_one(
            "SELECT
               (SELECT count(*) FROM ledger.outbox WHERE published_at IS NULL),
               (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)
                  FROM ledger.outbox WHERE published_at IS NULL)::float8,
               (SELECT count(*) FROM ledger.pending_events),
               (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(received_at)), 0)
                  FROM ledger.pending_events)::float8,
               (SELECT count(*) FROM ledger.late_events WHERE status = 'pending')",
            &[],
        )
        .await?;
    metrics.outbox_backlog.set(row.get(0));
    metrics.outbox_oldest_seconds.set(row.get(1));
    metrics.waiting_events.set(row.get(2));
    let waited: f64 = row.get(3);
    metrics.waiting_oldest_seconds.set(waited);
    metrics.late_events_stored.set(row.get(4));
    for origin in &config.apply_from {
        let events = metrics.lag_events.with_label_values(&[&origin.name]).get();
        let seconds = metrics.lag_seconds.with_label_values(&[&origin.name]).get();
        client
            .execute(
                "INSERT INTO ledger.replication_lag (origin_region, lag_events, lag_seconds, measured_at)
                 VALUES ($1, $2, $3, clock_timestamp())
                 ON CONFLICT (origin_region) DO UPDATE SET lag_events = EXCLUDED.lag_events,
                     lag_seconds = EXCLUDED.lag_seconds, measured_at = EXCLUDED.measured_at",
                &[&origin.name, &events, &seconds],
            )
            .await?;
    }
    let alert_after = Duration::from_secs(config.gap_alert_s).as_secs_f64();
    if waited > alert_after && last_gap_log.is_none_or(|at| at.elapsed() >= GAP_LOG_INTERVAL) {
        let stuck = client
            .query(
                "SELECT ledger.account_id_text(account_id), seq, origin_region
                 FROM ledger.pending_events
                 WHERE received_at < clock_timestamp() - make_interval(secs => $1)
                 ORDER BY received_at LIMIT 5",
                &[&alert_after],
            )
            .await?;
        let examples: Vec<String> = stuck
            .iter()
            .map(|r| {
                format!(
                    "{} seq {} from {}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, String>(2)
                )
            })
            .collect();
        tracing::warn!(
            waiting = metrics.waiting_events.get(),
            oldest_seconds = waited,
            examples = %examples.join("; "),
            "events are waiting for an earlier seq that has not arrived (a replication gap)"
        );
        *last_gap_log = Some(Instant::now());
    }
    Ok(())
}

async fn cleanup(
    client: &Client,
    config: &ReplicatorConfig,
    metrics: &Metrics,
) -> Result<(), ReplicationError> {
    let tables = [
        (
            "outbox",
            "DELETE FROM ledger.outbox WHERE id IN (
               SELECT id FROM ledger.outbox
               WHERE published_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2)",
            config.outbox_retention_s,
        ),
        (
            "idempotency_keys",
            "DELETE FROM ledger.idempotency_keys WHERE key IN (
               SELECT key FROM ledger.idempotency_keys
               WHERE created_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2)",
            config.idempotency_retention_s,
        ),
    ];
    for (table, sql, retention_s) in tables {
        let retention = retention_s as f64;
        loop {
            let deleted = client.execute(sql, &[&retention, &CLEANUP_CHUNK]).await?;
            metrics
                .cleaned_rows
                .with_label_values(&[table])
                .inc_by(deleted);
            if deleted < CLEANUP_CHUNK.unsigned_abs() {
                break;
            }
        }
    }
    Ok(())
}
