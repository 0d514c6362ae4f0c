//! Planned moves with RPO 0 (DESIGN.md, "Failover"): slots (chosen ones or a whole
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

use std::time::{Duration, Instant};

use ledger_wire::failover::{
    AccountEpoch, Digest, DrainReport, DrainRequest, ReleaseReport, ReleaseRequest, Scope,
    SlotEpoch,
};
use ledger_wire::internal::failover as paths;
use ledger_wire::ownership::{
    ChangeKind, Outcome, OwnershipMap, RegionStatus, SlotAtEpoch, Target,
};
use ledger_wire::AccountId;
use serde::Serialize;

use crate::{Cluster, FailoverError};

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
    cluster: &Cluster,
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
    let (freeze_version, _) = applied_version(
        &cluster
            .ownership
            .freeze_slots(slots.clone(), true, &reason)
            .await?,
    )?;
    tracing::info!(%from, %to, slots = slots.len(), "slots frozen");

    let prepared =
        drain_and_catch_up(cluster, &from, to, freeze_version, &scope, started, options).await;
    let (drain, drain_ms, catch_up_ms) = match prepared {
        Ok(done) => done,
        Err(error) => {
            rollback(cluster, &slots, &reason).await;
            return Err(error);
        }
    };
    let transfer_started = Instant::now();
    let transferred = cluster
        .ownership
        .transfer_slots(expected, to, &reason)
        .await;
    let (_, epoch) = match transferred
        .map_err(FailoverError::from)
        .and_then(|o| applied_version(&o))
    {
        Ok(done) => done,
        Err(error) => {
            rollback(cluster, &slots, &reason).await;
            return Err(error);
        }
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
    cluster: &Cluster,
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
    let drain: DrainReport = cluster
        .post(
            from,
            paths::DRAIN,
            &request,
            options.timeout + Duration::from_secs(2),
        )
        .await?;
    let drain_ms = ms(started.elapsed());
    let catch_up_started = Instant::now();
    let deadline = started + options.timeout;
    loop {
        let digest: Digest = cluster
            .post(to, paths::DIGEST, scope, Duration::from_secs(5))
            .await?;
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

async fn rollback(cluster: &Cluster, slots: &[u32], reason: &str) {
    let why = format!("roll back: {reason}");
    match cluster
        .ownership
        .freeze_slots(slots.to_vec(), false, &why)
        .await
    {
        Ok(_) => tracing::warn!(
            slots = slots.len(),
            "switchover rolled back: slots thawed at their old owner"
        ),
        Err(error) => {
            tracing::error!(%error, "switchover failed AND the thaw failed: run `failover thaw` for these slots")
        }
    }
}

async fn release_at(
    cluster: &Cluster,
    to: &str,
    request: &ReleaseRequest,
    options: SwitchoverOptions,
) -> Result<u64, FailoverError> {
    let started = Instant::now();
    let report: ReleaseReport = cluster
        .post(
            to,
            paths::RELEASE,
            request,
            options.timeout + Duration::from_secs(2),
        )
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
    cluster: &Cluster,
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
            .ownership
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
    cluster: &Cluster,
    from: &str,
    to: &str,
    options: SwitchoverOptions,
) -> Result<Vec<MoveReport>, FailoverError> {
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
        return Err(FailoverError::Invalid(format!(
            "nothing is homed in {from}"
        )));
    }
    let mut reports = Vec::new();
    if !slots.is_empty() {
        reports.push(switch_slots(cluster, &slots, to, options).await?);
    }
    for account in accounts {
        reports.push(rehome(cluster, account, to, options).await?);
    }
    Ok(reports)
}

/// A switchover back to `region` of what its last promote moved away and is still
/// where the promote put it, once the region is active, drained and reconciled.
pub async fn failback(
    cluster: &Cluster,
    region: &str,
    options: SwitchoverOptions,
) -> Result<Vec<MoveReport>, FailoverError> {
    let readiness = crate::status::failback_readiness(cluster, region).await?;
    if let Some(problem) = readiness {
        return Err(FailoverError::Refused(format!(
            "{region} is not ready for failback: {problem}"
        )));
    }
    let mut map = cluster.map().await?;
    if map
        .regions
        .iter()
        .any(|r| r.name == region && r.status == RegionStatus::Down)
    {
        cluster
            .ownership
            .set_region(
                region,
                None,
                Some(RegionStatus::Active),
                "failback: healthy and reconciled",
            )
            .await?;
        map = cluster.map().await?;
    }
    let history = crate::audit::history(cluster).await?;
    let promote = history
        .iter()
        .rev()
        .find(|c| matches!(&c.kind, ChangeKind::Promote { region: r, .. } if r == region))
        .ok_or_else(|| {
            FailoverError::Invalid(format!(
                "no promote of {region} in the ownership history; use `switchover` to move slots to it"
            ))
        })?;
    // Per current owner: the slots and accounts the promote gave it, unchanged since.
    let mut by_owner: std::collections::BTreeMap<String, (Vec<u32>, Vec<AccountId>)> =
        std::collections::BTreeMap::new();
    for step in &promote.moves {
        match step.target {
            Target::Slots { first, last } => {
                for slot in first..=last {
                    if let Some(owner) = map.slots.get(slot as usize) {
                        if owner.region == step.to && owner.epoch == step.epoch {
                            by_owner.entry(step.to.clone()).or_default().0.push(slot);
                        }
                    }
                }
            }
            Target::Account(account) => {
                if map
                    .overrides
                    .get(&account)
                    .is_some_and(|o| o.region == step.to && o.epoch == step.epoch)
                {
                    by_owner.entry(step.to.clone()).or_default().1.push(account);
                }
            }
        }
    }
    let mut reports = Vec::new();
    for (_, (slots, accounts)) in by_owner {
        if !slots.is_empty() {
            reports.push(switch_slots(cluster, &slots, region, options).await?);
        }
        for account in accounts {
            reports.push(rehome(cluster, account, region, options).await?);
        }
    }
    Ok(reports)
}
