//! A switchover at the old owner: stop writing the scope for good, let what is in
//! flight finish, publish the scope's outbox, report the high-water mark; and at the
//! new owner, take the planned release and wait until the gain is usable.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use ledger_wire::failover::{
    Digest, DrainReport, DrainRequest, ReleaseReport, ReleaseRequest, Scope,
};

use super::{ids, slots};
use crate::home::Ownership;
use crate::store::StoreError;

/// How often a drain re-checks running transactions and the outbox.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// How often a release re-checks that the lease made the gain usable.
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// Why a drain did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("timed out while {0}; nothing was changed by this call")]
    TimedOut(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stops this region writing the scope for good and reports its high-water mark, or
/// gives up at `until`.
pub async fn drain(
    ownership: &Ownership,
    pool: &Pool,
    request: &DrainRequest,
    until: Instant,
) -> Result<DrainReport, DrainError> {
    let started = Instant::now();
    // 1. The database no longer lets this region write the scope: a renewal granted
    //    at the freeze's map version (or later) is recorded without it.
    if ownership.is_dynamic()
        && !ownership
            .await_recorded(
                request.map_version,
                until.saturating_duration_since(Instant::now()),
            )
            .await
    {
        return Err(DrainError::TimedOut(
            "recording the lease without the drained scope",
        ));
    }
    // 2. Transactions that may have passed their lease check before that finish.
    let running = running_transactions(pool).await?;
    if !await_transactions(pool, &running, until).await? {
        return Err(DrainError::TimedOut("waiting for running transactions"));
    }
    // 3. Everything written for the scope is on this region's topic.
    let Some(published) = await_published(pool, &request.scope, until).await? else {
        return Err(DrainError::TimedOut("publishing the outbox"));
    };
    let high_water = digest(pool, &request.scope).await?;
    Ok(DrainReport {
        region: ownership.region().to_owned(),
        waited_transactions: running.len(),
        published_while_draining: published,
        high_water,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Takes a planned release (the old owner drained), then waits until the gain is
/// usable here and recorded in the database, or `until`.
pub async fn release(
    ownership: &Ownership,
    request: &ReleaseRequest,
    until: Instant,
) -> ReleaseReport {
    let started = Instant::now();
    let slots: Vec<(u32, u64)> = request.slots.iter().map(|s| (s.slot, s.epoch)).collect();
    let accounts: Vec<_> = request
        .accounts
        .iter()
        .map(|a| (a.account, a.epoch))
        .collect();
    ownership.release(&slots, &accounts);
    let mut usable = ownership.usable(&slots, &accounts);
    while !usable && Instant::now() < until {
        tokio::time::sleep(RELEASE_POLL).await;
        usable = ownership.usable(&slots, &accounts);
    }
    // The database must agree before writes succeed: wait for the next recorded grant.
    if usable {
        let version = ownership.map().version;
        usable = ownership
            .await_recorded(version, until.saturating_duration_since(Instant::now()))
            .await;
    }
    ReleaseReport {
        usable,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
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
