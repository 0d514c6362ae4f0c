//! Keeping [`Ownership`] current: the lease renewal loop (every ttl/3, and at once when
//! the map changed), which also records the lease in the region's database, and the
//! watch loop that follows the ownership service's history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use ledger_wire::ownership::{ChangeKind, ChangeRecord, OwnershipMap, Target};
use ownership_client::{ClientError, OwnershipClient};
use tokio_util::sync::CancellationToken;

use super::drift::DriftEstimator;
use super::lease::LeaseSnapshot;
use super::Ownership;
use crate::metrics::Metrics;
use crate::NodeError;

/// How long a watch request waits for a change.
const WATCH_WAIT: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Lease timing: fencing delay = ttl * (1 + drift) + margin (ARCHITECTURE.md).
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    pub max_clock_drift: f64,
    pub fence_margin: Duration,
    /// Subtracted from the expiry recorded in the database: the commit after the
    /// lease check must also land inside the lease.
    pub commit_margin: Duration,
}

impl LeaseTiming {
    pub fn fence_delay(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(1.0 + self.max_clock_drift) + self.fence_margin
    }
}

/// Reads the map, retrying until `deadline` (voters may still be electing a leader).
pub async fn initial_map(
    client: &OwnershipClient,
    deadline: Duration,
    shutdown: &CancellationToken,
) -> Result<OwnershipMap, NodeError> {
    let until = Instant::now() + deadline;
    loop {
        match client.map().await {
            Ok(map) if !map.slots.is_empty() => return Ok(map),
            Ok(_) => tracing::info!("ownership cluster not initialised yet"),
            Err(e) => tracing::warn!(error = %e, "ownership service not reachable yet"),
        }
        if Instant::now() > until {
            return Err(NodeError::Ownership(
                "no initialised ownership map within the start-up deadline".into(),
            ));
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(NodeError::Config("shut down while starting".into())),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Renews the lease every ttl/3 (or when woken), records each grant in the database.
/// A renewal that failed, whatever the reason, is tried again after [`RETRY_PAUSE`]:
/// renewing is idempotent (the grant lists what the region owns at that moment, and
/// only the attempt that succeeded sets the lease's start), and waiting a third of the
/// ttl after a failure wasted most of what was left of the lease while the voters
/// elected a new leader (measured: every region's writes stopped for seconds when the
/// leader's region died under load).
pub async fn renew_loop(
    ownership: Arc<Ownership>,
    client: Arc<OwnershipClient>,
    pool: Pool,
    timing: LeaseTiming,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let mut drift = DriftEstimator::default();
    // Failed renewals in a row: the first is logged as a warning, the rest (one every
    // RETRY_PAUSE) only at debug, and the end of the streak once.
    let mut failures: u32 = 0;
    metrics.set_max_clock_drift(timing.max_clock_drift);
    loop {
        let ttl = Duration::from_millis(ownership.map().lease_ttl_ms.max(300));
        let sent_at = Instant::now();
        let renewal = tokio::time::timeout(ttl, client.renew_lease(ownership.region())).await;
        let renewed = matches!(renewal, Ok(Ok(_)));
        match renewal {
            Ok(Ok(grant)) => {
                if let Some(estimate) = drift.observe(Instant::now(), grant.granted_at_ms) {
                    metrics.set_clock_drift(estimate);
                }
                let fence = timing.fence_delay(Duration::from_millis(grant.ttl_ms));
                let (snapshot, held) = {
                    let released = ownership
                        .released()
                        .lock()
                        .map(|r| r.clone())
                        .unwrap_or_default();
                    let mut lease = ownership
                        .lease()
                        .write()
                        .map_err(|_| NodeError::Ownership("lease lock poisoned".into()))?;
                    lease.apply_grant(&grant, sent_at, fence, &released);
                    (lease.snapshot(), lease.held_slot_count())
                };
                metrics.lease_renewed(true);
                if failures > 0 {
                    tracing::info!(failures, "lease renewed again");
                    failures = 0;
                }
                match record(&pool, &snapshot, timing.commit_margin).await {
                    Ok(()) => {
                        // Only now may writes commit (the database checks the recorded
                        // lease), so readiness checks that wait on this gauge see a
                        // region that can write, not one that merely was granted.
                        metrics.set_lease(held);
                        ownership.note_recorded(grant.map_version);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record the lease in the database");
                    }
                }
                // The grant is newer than the map (a change the watch has not brought,
                // or no watch at all): read the map, so routing follows the lease.
                if grant.map_version > ownership.map().version {
                    ownership.refresh().await;
                }
            }
            Ok(Err(e)) => {
                metrics.lease_renewed(false);
                failures += 1;
                log_renewal_error(&e, failures);
            }
            Err(_) => {
                metrics.lease_renewed(false);
                failures += 1;
                tracing::warn!(
                    ttl_ms = ttl.as_millis(),
                    "lease renewal took longer than the ttl"
                );
            }
        }
        let pause = if renewed {
            (ttl / 3).saturating_sub(sent_at.elapsed())
        } else {
            RETRY_PAUSE
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = ownership.renew_now.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

fn log_renewal_error(error: &ClientError, in_a_row: u32) {
    if in_a_row == 1 {
        tracing::warn!(error = %error, "lease renewal failed; retrying, writes stop when the lease runs out");
    } else {
        tracing::debug!(error = %error, in_a_row, "lease renewal failed again");
    }
}

/// Follows the history: applies each change to the map, drops at once what moved away
/// from this region, remembers planned releases, and wakes the renewal loop.
pub async fn watch_loop(
    ownership: Arc<Ownership>,
    client: Arc<OwnershipClient>,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    loop {
        let since = ownership.map().version;
        let reply = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            reply = client.watch(since, WATCH_WAIT) => reply,
        };
        match reply {
            Ok(reply) if reply.changes.is_empty() => {}
            Ok(reply) => {
                let mut map = (*ownership.map()).clone();
                for change in &reply.changes {
                    if change.version <= map.version {
                        continue;
                    }
                    if change.version != map.version + 1 {
                        // A gap (the voter compacted history we never saw): start over.
                        if let Ok(fresh) = client.map().await {
                            map = fresh;
                        }
                        break;
                    }
                    note_change(&ownership, &map, change);
                    map.apply(change);
                }
                tracing::info!(
                    version = map.version,
                    epoch = map.epoch,
                    "ownership map changed"
                );
                ownership.set_map(map);
                ownership.renew_now.notify_one();
            }
            Err(e) => {
                tracing::debug!(error = %e, "ownership watch failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

/// What one change means for this region before the next renewal answers.
fn note_change(ownership: &Ownership, before: &OwnershipMap, change: &ChangeRecord) {
    let me = ownership.region();
    for step in &change.moves {
        match step.target {
            Target::Slots { first, last } => {
                for slot in first..=last {
                    let previous = before.slots.get(slot as usize);
                    let was_mine = previous.is_some_and(|p| p.region == me);
                    if was_mine && step.to != me {
                        if let Ok(mut lease) = ownership.lease().write() {
                            lease.drop_slot(slot);
                        }
                    }
                    // A transfer of a slot its owner had frozen (and so stopped writing)
                    // needs no fencing delay: the previous owner released it.
                    let planned = matches!(change.kind, ChangeKind::Transfer)
                        && previous.is_some_and(|p| p.frozen);
                    if step.to == me && planned {
                        if let Ok(mut released) = ownership.released().lock() {
                            released.slots.insert((slot, step.epoch));
                        }
                    }
                }
            }
            Target::Account(account) => {
                let was_mine = before.home_of(account).is_some_and(|(r, _)| r == me);
                if was_mine && step.to != me {
                    if let Ok(mut lease) = ownership.lease().write() {
                        lease.drop_account(account);
                    }
                }
            }
        }
    }
}

/// Records the lease in the database, in its clock: expiry = now - age + ttl - margin,
/// each grant usable from now + its remaining fencing delay; everything else removed.
pub async fn record(
    pool: &Pool,
    lease: &LeaseSnapshot,
    commit_margin: Duration,
) -> Result<(), NodeError> {
    let valid_for = lease.ttl.as_secs_f64() - lease.age.as_secs_f64() - commit_margin.as_secs_f64();
    let slots: Vec<i32> = lease
        .slots
        .iter()
        .filter_map(|s| i32::try_from(s.0).ok())
        .collect();
    let slot_epochs: Vec<i64> = lease.slots.iter().map(|s| epoch(s.1)).collect();
    let slot_fences: Vec<f64> = lease.slots.iter().map(|s| s.2.as_secs_f64()).collect();
    let accounts: Vec<i64> = lease.accounts.iter().map(|a| a.0.as_i64()).collect();
    let account_epochs: Vec<i64> = lease.accounts.iter().map(|a| epoch(a.1)).collect();
    let account_fences: Vec<f64> = lease.accounts.iter().map(|a| a.2.as_secs_f64()).collect();
    let away: Vec<i64> = lease.away.iter().map(|a| a.as_i64()).collect();

    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let statements: [(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)]); 6] = [
        (
            "DELETE FROM ledger.slot_leases WHERE NOT (slot = ANY($1))",
            &[&slots],
        ),
        (
            "INSERT INTO ledger.slot_leases (slot, epoch, expires_at, valid_from)
             SELECT s, e, clock_timestamp() + make_interval(secs => $4),
                    clock_timestamp() + make_interval(secs => f)
             FROM unnest($1::int[], $2::bigint[], $3::float8[]) AS t(s, e, f)
             ON CONFLICT (slot) DO UPDATE SET epoch = EXCLUDED.epoch,
                 expires_at = EXCLUDED.expires_at, valid_from = EXCLUDED.valid_from",
            &[&slots, &slot_epochs, &slot_fences, &valid_for],
        ),
        (
            "DELETE FROM ledger.account_leases WHERE NOT (account_id = ANY($1))",
            &[&accounts],
        ),
        (
            "INSERT INTO ledger.account_leases (account_id, epoch, expires_at, valid_from)
             SELECT a, e, clock_timestamp() + make_interval(secs => $4),
                    clock_timestamp() + make_interval(secs => f)
             FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) AS t(a, e, f)
             ON CONFLICT (account_id) DO UPDATE SET epoch = EXCLUDED.epoch,
                 expires_at = EXCLUDED.expires_at, valid_from = EXCLUDED.valid_from",
            &[&accounts, &account_epochs, &account_fences, &valid_for],
        ),
        (
            "DELETE FROM ledger.accounts_away WHERE NOT (account_id = ANY($1))",
            &[&away],
        ),
        (
            "INSERT INTO ledger.accounts_away (account_id) SELECT unnest($1::bigint[])
             ON CONFLICT DO NOTHING",
            &[&away],
        ),
    ];
    for (sql, params) in statements {
        tx.execute(sql, params).await?;
    }
    tx.commit().await.map_err(NodeError::Database)
}

fn epoch(e: u64) -> i64 {
    i64::try_from(e).unwrap_or(i64::MAX)
}
