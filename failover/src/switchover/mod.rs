//! Planned moves with RPO 0 (ARCHITECTURE.md, "Failover"): slots (chosen ones or a whole
//! region's) and single accounts (rehome), and failback after a promote.
//!
//! Slots: freeze -> the old owner drains (its database stops letting it write them,
//! running transactions finish, its outbox is published) and reports its high-water
//! mark -> the new owner has applied up to it -> one ownership entry transfers them at
//! a new epoch -> the new owner is told they were released (no fencing delay) and
//! serves. Any failure before the transfer thaws the slots: the old owner serves on.
//!
//! Accounts: rehome at once (the old owner drops the account at its next renewal or
//! watch), drain the old owner for that account, wait for the new owner to catch up,
//! release. If a step fails after the rehome the account stays moved and the new owner
//! serves after the fencing delay; whatever the old owner had not published arrives
//! as late events and is reconciled.
//!
//! Every call goes through [`Ports`] (the ownership service and the nodes' drain,
//! digest and release), so each step's failure is unit-tested with a fake
//! (`tests.rs`). A region switchover or failback is several moves: when one fails, the
//! reports of those already done come back with the error ([`Partial`]).

mod failback;
mod ports;
#[cfg(test)]
mod tests;

pub use failback::{failback, failback_moves};
pub use ports::Ports;

use std::time::{Duration, Instant};

use ledger_wire::failover::{
    AccountEpoch, Digest, DrainReport, DrainRequest, ReleaseRequest, Scope, SlotEpoch,
};
use ledger_wire::ownership::{Outcome, OwnershipMap, RegionStatus, SlotAtEpoch};
use ledger_wire::AccountId;
use serde::Serialize;

use crate::FailoverError;

/// How often the tool re-reads the new owner's digest.
const APPLY_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy)]
pub struct SwitchoverOptions {
    /// Budget for draining and catching up; past it the switchover is rolled back.
    pub timeout: Duration,
}

impl Default for SwitchoverOptions {
    fn default() -> Self {
        SwitchoverOptions {
            timeout: Duration::from_secs(10),
        }
    }
}

/// What one planned move did, with timings from the freeze (or rehome) on.
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    pub from: String,
    pub to: String,
    pub slots: Vec<u32>,
    pub accounts: Vec<String>,
    pub epoch: u64,
    pub drain: Option<DrainReport>,
    /// From the freeze (or rehome) to the new owner confirming it can write: the
    /// longest any write to these slots could have been refused.
    pub unavailable_ms: u64,
    pub drain_ms: u64,
    pub catch_up_ms: u64,
    pub transfer_ms: u64,
    pub release_ms: u64,
    pub high_water: Digest,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn applied_version(outcome: &Outcome) -> Result<(u64, u64), FailoverError> {
    match outcome {
        Outcome::Applied { version, epoch, .. } => Ok((*version, *epoch)),
        other => Err(FailoverError::Invalid(format!(
            "unexpected answer from the ownership service: {other:?}"
        ))),
    }
}

fn check_target(map: &OwnershipMap, to: &str) -> Result<(), FailoverError> {
    match map.regions.iter().find(|r| r.name == to) {
        None => Err(FailoverError::Invalid(format!("no region named {to}"))),
        Some(r) if r.status == RegionStatus::Down => Err(FailoverError::Refused(format!(
            "region {to} is down; it must be active (healthy and reconciled) to take slots"
        ))),
        Some(_) => Ok(()),
    }
}

/// Moves `slots` (all owned by one region) to `to`.
pub async fn switch_slots(
    cluster: &impl Ports,
    slots: &[u32],
    to: &str,
    options: SwitchoverOptions,
) -> Result<MoveReport, FailoverError> {
    let map = cluster.map().await?;
    check_target(&map, to)?;
    let mut slots = slots.to_vec();
    slots.sort_unstable();
    slots.dedup();
    let first = *slots
        .first()
        .ok_or_else(|| FailoverError::Invalid("no slots to move".into()))?;
    let owner_of = |slot: u32| map.slots.get(slot as usize);
    let from = owner_of(first)
        .ok_or_else(|| FailoverError::Invalid(format!("slot {first} does not exist")))?
        .region
        .clone();
    let mut expected = Vec::with_capacity(slots.len());
    for &slot in &slots {
        let owner = owner_of(slot)
            .ok_or_else(|| FailoverError::Invalid(format!("slot {slot} does not exist")))?;
        if owner.region != from {
            return Err(FailoverError::Invalid(format!(
                "slot {slot} belongs to {}, slot {first} to {from}: move one owner's slots at a time",
                owner.region
            )));
        }
        expected.push(SlotAtEpoch {
            slot,
            expected_epoch: owner.epoch,
        });
    }
    if from == to {
        return Err(FailoverError::Invalid(format!(
            "the slots are already homed in {to}"
        )));
    }
    // Accounts homed by override stay where they are: not part of the comparison.
    let exclude: Vec<AccountId> = map
        .overrides
        .keys()
        .filter(|a| slots.contains(&u32::from(a.slot())))
        .copied()
        .collect();
    let scope = Scope {
        slots: slots.clone(),
        accounts: Vec::new(),
        exclude,
    };
    let started = Instant::now();
    let reason = format!("switchover of {} slots {from} -> {to}", slots.len());
    let frozen = cluster.freeze_slots(slots.clone(), true, &reason).await;
    let (freeze_version, _) = match frozen.and_then(|o| applied_version(&o)) {
        Ok(done) => done,
        // The freeze may still commit (a slow or replaced leader): thaw, or the slots
        // would stay frozen for ever and every write and saga credit to them refused.
        // The thaw is ordered after the freeze in the Raft log if both commit.
        Err(error @ FailoverError::Ownership(ownership_client::ClientError::OutcomeUnknown(_))) => {
            return Err(rollback(cluster, &slots, &reason, error).await)
        }
        Err(error) => return Err(error),
    };
    tracing::info!(%from, %to, slots = slots.len(), "slots frozen");

    let prepared =
        drain_and_catch_up(cluster, &from, to, freeze_version, &scope, started, options).await;
    let (drain, drain_ms, catch_up_ms) = match prepared {
        Ok(done) => done,
        Err(error) => return Err(rollback(cluster, &slots, &reason, error).await),
    };
    let transfer_started = Instant::now();
    let transferred = cluster.transfer_slots(expected, to, &reason).await;
    let (_, epoch) = match transferred.and_then(|o| applied_version(&o)) {
        Ok(done) => done,
        Err(error) => return Err(rollback(cluster, &slots, &reason, error).await),
    };
    let transfer_ms = ms(transfer_started.elapsed());
    let release = ReleaseRequest {
        slots: slots
            .iter()
            .map(|&slot| SlotEpoch { slot, epoch })
            .collect(),
        accounts: Vec::new(),
        timeout_ms: ms(options.timeout),
    };
    let release_ms = release_at(cluster, to, &release, options).await?;
    Ok(MoveReport {
        from,
        to: to.to_owned(),
        slots,
        accounts: Vec::new(),
        epoch,
        high_water: drain.high_water,
        drain: Some(drain),
        unavailable_ms: ms(started.elapsed()),
        drain_ms,
        catch_up_ms,
        transfer_ms,
        release_ms,
    })
}

async fn drain_and_catch_up(
    cluster: &impl Ports,
    from: &str,
    to: &str,
    map_version: u64,
    scope: &Scope,
    started: Instant,
    options: SwitchoverOptions,
) -> Result<(DrainReport, u64, u64), FailoverError> {
    let request = DrainRequest {
        map_version,
        scope: scope.clone(),
        timeout_ms: ms(options.timeout),
    };
    let drain = cluster
        .drain(from, &request, options.timeout + Duration::from_secs(2))
        .await?;
    let drain_ms = ms(started.elapsed());
    let catch_up_started = Instant::now();
    let deadline = started + options.timeout;
    loop {
        let digest = cluster.digest(to, scope, Duration::from_secs(5)).await?;
        if digest == drain.high_water {
            break;
        }
        if Instant::now() > deadline {
            return Err(FailoverError::Timeout {
                step: format!(
                    "{to} applying {from}'s writes up to its high-water mark ({} accounts, seq sum {}; {to} has {} / {})",
                    drain.high_water.accounts, drain.high_water.seq_sum, digest.accounts, digest.seq_sum
                ),
                waited_ms: ms(started.elapsed()),
            });
        }
        tokio::time::sleep(APPLY_POLL).await;
    }
    Ok((drain, drain_ms, ms(catch_up_started.elapsed())))
}

/// Thaws the slots after a failure before the transfer; returns the error to report
/// (the original one, or both when the thaw failed too, with the command that
/// finishes the job).
async fn rollback(
    cluster: &impl Ports,
    slots: &[u32],
    reason: &str,
    error: FailoverError,
) -> FailoverError {
    let why = format!("roll back: {reason}");
    match cluster.freeze_slots(slots.to_vec(), false, &why).await {
        Ok(_) => {
            tracing::warn!(
                slots = slots.len(),
                "switchover rolled back: slots thawed at their old owner"
            );
            error
        }
        Err(thaw) => FailoverError::Refused(format!(
            "{error}; AND the rollback could not thaw the slots ({thaw}): they stay frozen \
             (writes refused) until you run `failover thaw --slots {}`",
            slot_list(slots)
        )),
    }
}

/// `1-4,9`: slots as ranges, for a command line.
pub fn slot_list(slots: &[u32]) -> String {
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    parts.join(",")
}

/// Thaws frozen slots by hand (`failover thaw`): after a switchover whose rollback
/// could not reach the ownership service.
pub async fn thaw(cluster: &impl Ports, slots: &[u32]) -> Result<u64, FailoverError> {
    if slots.is_empty() {
        return Err(FailoverError::Invalid("no slots to thaw".into()));
    }
    let outcome = cluster
        .freeze_slots(slots.to_vec(), false, "thaw by an operator")
        .await?;
    Ok(applied_version(&outcome)?.0)
}

async fn release_at(
    cluster: &impl Ports,
    to: &str,
    request: &ReleaseRequest,
    options: SwitchoverOptions,
) -> Result<u64, FailoverError> {
    let started = Instant::now();
    let report = cluster
        .release(to, request, options.timeout + Duration::from_secs(2))
        .await?;
    if !report.usable {
        return Err(FailoverError::Timeout {
            step: format!("{to} taking over after the release (it serves after the fencing delay)"),
            waited_ms: report.took_ms,
        });
    }
    Ok(ms(started.elapsed()))
}

/// Moves one account's home to `to` (a planned per-account switchover).
pub async fn rehome(
    cluster: &impl Ports,
    account: AccountId,
    to: &str,
    options: SwitchoverOptions,
) -> Result<MoveReport, FailoverError> {
    let map = cluster.map().await?;
    check_target(&map, to)?;
    let (from, epoch) = map
        .home_of(account)
        .map(|(r, e)| (r.to_owned(), e))
        .ok_or_else(|| {
            FailoverError::Invalid(format!(
                "account {account} is outside the deployment's slots"
            ))
        })?;
    if from == to {
        return Err(FailoverError::Invalid(format!(
            "account {account} is already homed in {to}"
        )));
    }
    let started = Instant::now();
    let reason = format!("rehome {account} {from} -> {to}");
    let (version, new_epoch) = applied_version(
        &cluster
            .rehome_account(account, to, Some(epoch), &reason)
            .await?,
    )?;
    let scope = Scope {
        slots: Vec::new(),
        accounts: vec![account],
        exclude: Vec::new(),
    };
    let (drain, drain_ms, catch_up_ms) =
        drain_and_catch_up(cluster, &from, to, version, &scope, started, options).await?;
    let release = ReleaseRequest {
        slots: Vec::new(),
        accounts: vec![AccountEpoch {
            account,
            epoch: new_epoch,
        }],
        timeout_ms: ms(options.timeout),
    };
    let release_ms = release_at(cluster, to, &release, options).await?;
    Ok(MoveReport {
        from,
        to: to.to_owned(),
        slots: Vec::new(),
        accounts: vec![account.to_string()],
        epoch: new_epoch,
        high_water: drain.high_water,
        drain: Some(drain),
        unavailable_ms: ms(started.elapsed()),
        drain_ms,
        catch_up_ms,
        transfer_ms: 0,
        release_ms,
    })
}

/// Moves everything homed in `from` to `to`: its slots in one move, then each account
/// homed there by override.
pub async fn switch_region(
    cluster: &impl Ports,
    from: &str,
    to: &str,
    options: SwitchoverOptions,
) -> Result<Vec<MoveReport>, Partial> {
    let map = cluster.map().await?;
    let slots: Vec<u32> = (0u32..)
        .zip(&map.slots)
        .filter(|(_, owner)| owner.region == from)
        .map(|(slot, _)| slot)
        .collect();
    let accounts: Vec<AccountId> = map
        .overrides
        .iter()
        .filter(|(_, owner)| owner.region == from)
        .map(|(account, _)| *account)
        .collect();
    if slots.is_empty() && accounts.is_empty() {
        return Err(FailoverError::Invalid(format!("nothing is homed in {from}")).into());
    }
    let mut moves = Moves::default();
    if !slots.is_empty() {
        moves.add(switch_slots(cluster, &slots, to, options).await)?;
    }
    for account in accounts {
        moves.add(rehome(cluster, account, to, options).await)?;
    }
    Ok(moves.finish())
}

/// The moves of a multi-move operation so far: a failed move ends it, and the error
/// carries the moves already done ([`Partial`]).
#[derive(Debug, Default)]
pub(crate) struct Moves {
    done: Vec<MoveReport>,
}

impl Moves {
    pub(crate) fn add(&mut self, step: Result<MoveReport, FailoverError>) -> Result<(), Partial> {
        match step {
            Ok(report) => {
                self.done.push(report);
                Ok(())
            }
            Err(error) => Err(Partial {
                done: std::mem::take(&mut self.done),
                error,
            }),
        }
    }

    pub(crate) fn finish(self) -> Vec<MoveReport> {
        self.done
    }
}

/// A multi-move operation that failed part way: what was moved, and why it stopped.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after {} of the moves succeeded)", done.len())]
pub struct Partial {
    pub done: Vec<MoveReport>,
    #[source]
    pub error: FailoverError,
}

impl From<FailoverError> for Partial {
    fn from(error: FailoverError) -> Self {
        Partial {
            done: Vec::new(),
            error,
        }
    }
}
