//! The node's side of failover: draining a scope for a switchover (the database stops
//! letting it write, in-flight transactions finish, the outbox is published), the
//! digest both sides compare, this region's status and audit, late-event listing and
//! acknowledgement, and the reconciler worker that replays late events for accounts
//! this region owns now (`ledger.reconcile_late`, migration V5).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use ledger_wire::failover::{
    AuditAccount, AuditEntry, AuditSnapshot, AuditTotal, AuditTransfer, Digest, LateEvent,
    MoneyInFlight, NodeStatus, ReplicationLag, Scope,
};
use ledger_wire::AccountId;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::passes::Passes;
use crate::store::StoreError;
use crate::NodeError;

/// How often a drain re-checks running transactions and the outbox.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// Late events looked at per reconciler pass.
const RECONCILE_LIMIT: i32 = 200;

fn ids(accounts: &[AccountId]) -> Vec<i64> {
    accounts.iter().map(|a| a.as_i64()).collect()
}

fn slots(scope: &Scope) -> Vec<i32> {
    scope
        .slots
        .iter()
        .filter_map(|s| i32::try_from(*s).ok())
        .collect()
}

/// The scope's digest at this region.
pub async fn digest(pool: &Pool, scope: &Scope) -> Result<Digest, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT accounts, seq_sum::bigint FROM ledger.ownership_digest($1, $2, $3)",
            &[&slots(scope), &ids(&scope.accounts), &ids(&scope.exclude)],
        )
        .await?;
    Ok(Digest {
        accounts: row.try_get(0)?,
        seq_sum: row.try_get(1)?,
    })
}

/// Transaction ids running now: any of them may have passed its lease check before
/// the lease record changed, so a drain waits for them.
pub async fn running_transactions(pool: &Pool) -> Result<Vec<String>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT coalesce(array_agg(x::text), '{}') FROM pg_snapshot_xip(pg_current_snapshot()) x",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Waits until none of `xids` is still running; false when `until` passed first.
pub async fn await_transactions(
    pool: &Pool,
    xids: &[String],
    until: Instant,
) -> Result<bool, StoreError> {
    if xids.is_empty() {
        return Ok(true);
    }
    let client = pool.get().await?;
    loop {
        let running: i64 = client
            .query_one(
                "SELECT count(*) FROM unnest($1::text[]) x
                 WHERE pg_xact_status(x::xid8) = 'in progress'",
                &[&xids],
            )
            .await?
            .try_get(0)?;
        if running == 0 {
            return Ok(true);
        }
        if Instant::now() > until {
            return Ok(false);
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Unpublished outbox rows of the scope.
pub async fn unpublished(pool: &Pool, scope: &Scope) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM ledger.outbox
             WHERE published_at IS NULL
               AND ((((account_id >> 48)::integer) = ANY($1) AND NOT (account_id = ANY($3)))
                    OR account_id = ANY($2))",
            &[&slots(scope), &ids(&scope.accounts), &ids(&scope.exclude)],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Waits until the relay published every outbox row of the scope; returns how many
/// were waiting at the start, or `None` when `until` passed first.
pub async fn await_published(
    pool: &Pool,
    scope: &Scope,
    until: Instant,
) -> Result<Option<i64>, StoreError> {
    let first = unpublished(pool, scope).await?;
    let mut left = first;
    while left > 0 {
        if Instant::now() > until {
            return Ok(None);
        }
        tokio::time::sleep(DRAIN_POLL).await;
        left = unpublished(pool, scope).await?;
    }
    Ok(Some(first))
}

/// The parts of [`NodeStatus`] that live in the database.
pub async fn status(
    pool: &Pool,
    region: &str,
    map_version: u64,
    lease_live: bool,
    slots_held: usize,
) -> Result<NodeStatus, StoreError> {
    let client = pool.get().await?;
    let outbox = client
        .query_one(
            "SELECT count(*), (extract(epoch FROM clock_timestamp() - min(created_at)) * 1000)::bigint
             FROM ledger.outbox WHERE published_at IS NULL",
            &[],
        )
        .await?;
    let replication = client
        .query(
            "SELECT origin_region, lag_events, lag_seconds,
                    (extract(epoch FROM clock_timestamp() - measured_at) * 1000)::bigint
             FROM ledger.replication_lag ORDER BY origin_region",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(ReplicationLag {
                origin: row.try_get(0)?,
                lag_events: row.try_get(1)?,
                lag_seconds: row.try_get(2)?,
                measured_ms_ago: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let late_events = client
        .query(
            "SELECT status, count(*) FROM ledger.late_events GROUP BY status",
            &[],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<BTreeMap<String, i64>, tokio_postgres::Error>>()?;
    let money_in_flight = money_in_flight(&client).await?;
    Ok(NodeStatus {
        region: region.to_owned(),
        map_version,
        lease_live,
        slots_held,
        outbox_unpublished: outbox.try_get(0)?,
        oldest_unpublished_ms: outbox.try_get(1)?,
        replication,
        late_events,
        money_in_flight,
    })
}

/// Transfers debited in this region's ledger and not yet credited or refunded.
pub async fn money_in_flight(
    client: &deadpool_postgres::Client,
) -> Result<Vec<MoneyInFlight>, StoreError> {
    client
        .query(
            "SELECT currency, transfers, amount::text, oldest_seconds
             FROM ledger.money_in_flight() ORDER BY currency",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(MoneyInFlight {
                currency: row.try_get(0)?,
                transfers: row.try_get(1)?,
                amount: row.try_get(2)?,
                oldest_seconds: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(StoreError::from)
}

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

/// Everything the invariant checks need from this region.
pub async fn audit(pool: &Pool, region: &str) -> Result<AuditSnapshot, StoreError> {
    let client = pool.get().await?;
    let accounts = client
        .query(
            "SELECT ledger.account_id_text(a.id), a.seq, a.epoch, a.balance::text,
                    EXISTS (SELECT 1 FROM ledger.entries e WHERE e.account_id = a.id AND e.review)
             FROM ledger.accounts a ORDER BY a.id",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(AuditAccount {
                id: row.try_get(0)?,
                seq: row.try_get(1)?,
                epoch: row.try_get(2)?,
                balance: row.try_get(3)?,
                flagged: row.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let entries = client
        .query(
            "SELECT ledger.account_id_text(account_id), seq, epoch, origin_region, event_id,
                    txn_id, kind, reconciles, transfer_id
             FROM ledger.entries ORDER BY account_id, seq",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                account: row.try_get(0)?,
                seq: row.try_get(1)?,
                epoch: row.try_get(2)?,
                origin: row.try_get(3)?,
                event_id: row.try_get(4)?,
                txn_id: row.try_get(5)?,
                kind: row.try_get(6)?,
                reconciles: row.try_get(7)?,
                transfer_id: row.try_get(8)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let transfers = client
        .query("SELECT id, state FROM ledger.transfers ORDER BY id", &[])
        .await?
        .iter()
        .map(|row| {
            Ok(AuditTransfer {
                id: row.try_get(0)?,
                state: row.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let mut totals: BTreeMap<String, (Decimal, Decimal, Decimal)> = BTreeMap::new();
    for row in client
        .query(
            "SELECT currency, sum(balance) FROM ledger.accounts GROUP BY currency",
            &[],
        )
        .await?
    {
        totals.entry(row.try_get(0)?).or_default().0 = row.try_get(1)?;
    }
    for row in client
        .query(
            "SELECT currency, -sum(amount) FROM ledger.external_postings GROUP BY currency",
            &[],
        )
        .await?
    {
        totals.entry(row.try_get(0)?).or_default().1 = row.try_get(1)?;
    }
    for row in client
        .query("SELECT currency, amount FROM ledger.money_in_flight()", &[])
        .await?
    {
        totals.entry(row.try_get(0)?).or_default().2 = row.try_get(1)?;
    }
    let late_pending: i64 = client
        .query_one(
            "SELECT count(*) FROM ledger.late_events WHERE status = 'pending'",
            &[],
        )
        .await?
        .try_get(0)?;
    Ok(AuditSnapshot {
        region: region.to_owned(),
        accounts,
        entries,
        totals: totals
            .into_iter()
            .map(|(currency, (balances, external, in_flight))| {
                let total = AuditTotal {
                    balances: balances.normalize().to_string(),
                    external_net: external.normalize().to_string(),
                    in_flight: in_flight.normalize().to_string(),
                };
                (currency, total)
            })
            .collect(),
        late_pending,
        transfers,
    })
}

/// What this region holds of `origin`'s events applied in the last `since` (or
/// waiting for a gap), as a JSON array in the appliers' form.
pub async fn export_events(
    pool: &Pool,
    origin: &str,
    since: Duration,
) -> Result<serde_json::Value, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT ledger.export_events($1, make_interval(secs => $2))",
            &[&origin, &since.as_secs_f64()],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Applies events another region exported, by the usual rules (duplicates skip, gaps
/// wait, late events are kept); returns the count per outcome.
pub async fn import_events(
    pool: &Pool,
    events: &serde_json::Value,
) -> Result<BTreeMap<String, i64>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT outcome, count(*) FROM ledger.apply_events($1) GROUP BY outcome",
            &[events],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?)
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
    let client = pool
        .get()
        .await
        .map_err(|e| NodeError::Pool(e.to_string()))?;
    let rows = client
        .query(
            "SELECT event_id, outcome FROM ledger.reconcile_late($1, $2)",
            &[&region, &RECONCILE_LIMIT],
        )
        .await
        .map_err(NodeError::Database)?;
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
