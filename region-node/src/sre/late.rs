//! Late events (writes a deposed owner acknowledged): listing and acknowledgement for
//! the SRE, and the reconciler worker that decides them at the account's owner.

use std::time::Duration;

use deadpool_postgres::Pool;
use ledger_wire::failover::LateEvent;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::passes::Passes;
use crate::store::StoreError;
use crate::NodeError;

/// Late events looked at per reconciler pass.
const RECONCILE_LIMIT: i32 = 200;

const LATE_COLUMNS: &str = "event_id, ledger.account_id_text(account_id), seq, epoch, \
    origin_region, event_type, reason, status, event->'data'->>'amount', detail, \
    ledger.ts_text(received_at), ledger.ts_text(resolved_at), resolved_by, reconciled_seq";

fn late_event(row: &tokio_postgres::Row) -> Result<LateEvent, tokio_postgres::Error> {
    Ok(LateEvent {
        event_id: row.try_get(0)?,
        account: row.try_get(1)?,
        seq: row.try_get(2)?,
        epoch: row.try_get(3)?,
        origin_region: row.try_get(4)?,
        event_type: row.try_get(5)?,
        reason: row.try_get(6)?,
        status: row.try_get(7)?,
        amount: row.try_get(8)?,
        detail: row.try_get(9)?,
        received_at: row.try_get(10)?,
        resolved_at: row.try_get(11)?,
        resolved_by: row.try_get(12)?,
        reconciled_seq: row.try_get(13)?,
    })
}

/// Late events, newest first, optionally of one status.
pub async fn late_events(
    pool: &Pool,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<LateEvent>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {LATE_COLUMNS} FROM ledger.late_events
                 WHERE $1::text IS NULL OR status = $1 ORDER BY received_at DESC LIMIT $2"
            ),
            &[&status, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(late_event)
        .collect::<Result<_, tokio_postgres::Error>>()?)
}

/// Marks a flagged late event acknowledged by an SRE; `None` if there is no flagged
/// event with that id here.
pub async fn acknowledge(
    pool: &Pool,
    event_id: Uuid,
    by: &str,
    note: &str,
) -> Result<Option<LateEvent>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "UPDATE ledger.late_events
                 SET status = 'acknowledged',
                     detail = detail || format(' | acknowledged by %s at %s: %s', $2::text,
                                               ledger.ts_text(clock_timestamp()), $3::text)
                 WHERE event_id = $1 AND status = 'flagged' RETURNING {LATE_COLUMNS}"
            ),
            &[&event_id, &by, &note],
        )
        .await?;
    Ok(row.as_ref().map(late_event).transpose()?)
}

/// Replays late events of accounts this region owns now, every `poll`.
pub async fn reconciler(
    pool: Pool,
    region: String,
    poll: Duration,
    outbox_written: std::sync::Arc<tokio::sync::Notify>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let passes = Passes {
        what: "reconciliation",
        limit: RECONCILE_LIMIT as usize,
        poll,
        woken: std::sync::Arc::new(tokio::sync::Notify::new()),
        outbox_written,
    };
    passes
        .run(&shutdown, || reconcile_pass(&pool, &region, &metrics))
        .await;
    Ok(())
}

async fn reconcile_pass(pool: &Pool, region: &str, metrics: &Metrics) -> Result<usize, NodeError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT event_id, outcome FROM ledger.reconcile_late($1, $2)",
            &[&region, &RECONCILE_LIMIT],
        )
        .await?;
    let mut decided = 0;
    for row in &rows {
        let event: Uuid = row.get(0);
        let outcome: String = row.get(1);
        if let Some(error) = outcome.strip_prefix("failed: ") {
            tracing::warn!(%event, %error, "late event could not be decided; retrying next pass");
            metrics.reconciled("failed");
        } else {
            tracing::info!(%event, %outcome, "late event reconciled");
            metrics.reconciled(&outcome);
            decided += 1;
        }
    }
    Ok(decided)
}
