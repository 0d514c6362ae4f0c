//! Failback: a switchover back to a promoted region of what its last promote moved
//! away and is still where the promote put it. The selection is pure
//! ([`failback_moves`]) and unit-tested.

use std::collections::BTreeMap;

use ledger_wire::ownership::{ChangeKind, ChangeRecord, OwnershipMap, RegionStatus, Target};
use ledger_wire::AccountId;

use super::{rehome, switch_slots, MoveReport, Moves, Partial, SwitchoverOptions};
use crate::{Cluster, FailoverError};

/// A switchover back to `region` of what its last promote moved away and is still
/// where the promote put it, once the region is active, drained and reconciled.
pub async fn failback(
    cluster: &Cluster,
    region: &str,
    options: SwitchoverOptions,
) -> Result<Vec<MoveReport>, Partial> {
    let readiness = crate::status::failback_readiness(cluster, region).await?;
    if let Some(problem) = readiness {
        return Err(FailoverError::Refused(format!(
            "{region} is not ready for failback: {problem}"
        ))
        .into());
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
            .await
            .map_err(FailoverError::from)?;
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
    let mut moves = Moves::default();
    for (_, (slots, accounts)) in failback_moves(promote, &map) {
        if !slots.is_empty() {
            moves.add(switch_slots(cluster, &slots, region, options).await)?;
        }
        for account in accounts {
            moves.add(rehome(cluster, account, region, options).await)?;
        }
    }
    Ok(moves.finish())
}

/// Per current owner: the slots and accounts `promote` gave it that are still where it
/// put them (same owner, same epoch); anything moved since stays where it is.
pub fn failback_moves(
    promote: &ChangeRecord,
    map: &OwnershipMap,
) -> BTreeMap<String, (Vec<u32>, Vec<AccountId>)> {
    // Per current owner: the slots and accounts the promote gave it, unchanged since.
    let mut by_owner: BTreeMap<String, (Vec<u32>, Vec<AccountId>)> = BTreeMap::new();
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
    by_owner
}
