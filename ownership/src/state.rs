//! The ownership state machine's logic, free of Raft and I/O so it can be
//! property-tested.
//!
//! Deterministic: the same commands in the same order give the same state on every
//! voter. Time enters only as the timestamp the leader put into each proposal, and
//! is clamped to never run backwards (a new leader's clock may be behind the old one's).

use std::collections::BTreeMap;

use ledger_wire::ownership::{
    merge_slot_runs, AccountGrant, AccountOwner, ChangeKind, ChangeRecord, Command, LeaseGrant,
    Move, Outcome, OwnershipMap, RegionInfo, RegionSpec, RegionStatus, RejectCode, SlotAtEpoch,
    SlotGrant, SlotOwner, Target,
};
use ledger_wire::{AccountId, MAX_SLOTS};
use serde::{Deserialize, Serialize};

use crate::spread::spread_by_weight;

/// The largest lease ttl a cluster accepts; longer leases only slow failover down.
pub const MAX_LEASE_TTL_MS: u64 = 600_000;

/// One proposal as it sits in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub at_ms: i64,
    pub actor: String,
    pub reason: String,
    pub command: Command,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipState {
    version: u64,
    epoch: u64,
    slot_count: u32,
    lease_ttl_ms: u64,
    /// The latest proposal time applied; proposal times are clamped to it.
    clock_ms: i64,
    regions: BTreeMap<String, RegionInfo>,
    /// Region names in the order the cluster was created with, then as added.
    region_order: Vec<String>,
    slots: Vec<SlotOwner>,
    overrides: BTreeMap<AccountId, AccountOwner>,
    history: Vec<ChangeRecord>,
}

fn reject(code: RejectCode, message: impl Into<String>) -> Outcome {
    Outcome::Rejected {
        code,
        message: message.into(),
    }
}

impl OwnershipState {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn is_initialized(&self) -> bool {
        self.slot_count > 0
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The whole map as clients see it.
    pub fn map(&self) -> OwnershipMap {
        OwnershipMap {
            version: self.version,
            epoch: self.epoch,
            slot_count: self.slot_count,
            lease_ttl_ms: self.lease_ttl_ms,
            regions: self
                .region_order
                .iter()
                .filter_map(|name| self.regions.get(name).cloned())
                .collect(),
            slots: self.slots.clone(),
            overrides: self.overrides.clone(),
        }
    }

    /// History records with a version above `since`, oldest first, at most `limit`.
    pub fn changes_since(&self, since: u64, limit: usize) -> Vec<ChangeRecord> {
        // Versions in the history are strictly increasing, so binary search finds the start.
        let start = self.history.partition_point(|c| c.version <= since);
        self.history[start..].iter().take(limit).cloned().collect()
    }

    pub fn apply(&mut self, proposal: Proposal) -> Outcome {
        self.clock_ms = self.clock_ms.max(proposal.at_ms);
        let Proposal {
            actor,
            reason,
            command,
            ..
        } = proposal;
        if !self.is_initialized() && !matches!(command, Command::InitCluster { .. }) {
            return reject(RejectCode::NotInitialized, "the cluster is not initialised");
        }
        let change = match command {
            Command::InitCluster {
                slot_count,
                lease_ttl_ms,
                regions,
            } => self.init(slot_count, lease_ttl_ms, regions),
            Command::RenewLease { region } => return self.renew(&region),
            Command::FreezeSlots { slots, frozen } => self.freeze(&slots, frozen),
            Command::TransferSlots { slots, to } => self.transfer(&slots, &to),
            Command::Promote { region, force } => self.promote(&region, force),
            Command::RehomeAccount {
                account,
                to,
                expected_epoch,
            } => self.rehome(account, &to, expected_epoch),
            Command::SetRegion {
                region,
                weight,
                status,
            } => self.set_region(&region, weight, status),
        };
        match change {
            Ok(Some((kind, moves, regions))) => self.record(actor, reason, kind, moves, regions),
            Ok(None) => Outcome::Applied {
                version: self.version,
                epoch: self.epoch,
                change: None,
            },
            Err(rejected) => rejected,
        }
    }

    fn record(
        &mut self,
        actor: String,
        reason: String,
        kind: ChangeKind,
        moves: Vec<Move>,
        regions: Vec<RegionInfo>,
    ) -> Outcome {
        self.version += 1;
        let moves = merge_slot_runs(moves);
        let record = ChangeRecord {
            version: self.version,
            epoch: self.epoch,
            at_ms: self.clock_ms,
            actor,
            reason,
            kind,
            moves,
            regions,
        };
        self.history.push(record.clone());
        Outcome::Applied {
            version: self.version,
            epoch: self.epoch,
            change: Some(Box::new(record)),
        }
    }

    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    fn active_region(&self, name: &str) -> Result<&RegionInfo, Outcome> {
        match self.regions.get(name) {
            None => Err(reject(
                RejectCode::UnknownRegion,
                format!("no region named {name:?}"),
            )),
            Some(r) if r.status == RegionStatus::Down => Err(reject(
                RejectCode::RegionDown,
                format!("region {name} is down; set it active first"),
            )),
            Some(r) => Ok(r),
        }
    }

    fn slot_index(&self, slot: u32) -> Result<usize, Outcome> {
        if slot < self.slot_count {
            Ok(slot as usize)
        } else {
            Err(reject(
                RejectCode::InvalidArgument,
                format!("slot {slot} is out of range (0..{})", self.slot_count),
            ))
        }
    }

    fn init(&mut self, slot_count: u32, lease_ttl_ms: u64, specs: Vec<RegionSpec>) -> Change {
        if self.is_initialized() {
            return Err(reject(
                RejectCode::AlreadyInitialized,
                "the cluster is already initialised",
            ));
        }
        if slot_count == 0 || slot_count > MAX_SLOTS {
            return Err(reject(
                RejectCode::InvalidArgument,
                format!("slot count must be 1..={MAX_SLOTS}"),
            ));
        }
        if lease_ttl_ms == 0 || lease_ttl_ms > MAX_LEASE_TTL_MS {
            return Err(reject(
                RejectCode::InvalidArgument,
                format!("lease ttl must be 1..={MAX_LEASE_TTL_MS} ms"),
            ));
        }
        validate_regions(&specs)?;
        let weights: Vec<u64> = specs.iter().map(|s| u64::from(s.weight)).collect();
        let shares = spread_by_weight(slot_count as usize, &weights);
        let epoch = self.next_epoch();
        self.slot_count = slot_count;
        self.lease_ttl_ms = lease_ttl_ms;
        let mut moves = Vec::with_capacity(slot_count as usize);
        for (spec, share) in specs.iter().zip(shares) {
            for _ in 0..share {
                let slot = self.slots.len() as u32;
                self.slots.push(SlotOwner {
                    region: spec.name.clone(),
                    epoch,
                    frozen: false,
                });
                moves.push(Move {
                    target: Target::Slots {
                        first: slot,
                        last: slot,
                    },
                    from: None,
                    to: spec.name.clone(),
                    epoch,
                    frozen: false,
                });
            }
        }
        let mut regions = Vec::with_capacity(specs.len());
        for spec in specs {
            let info = RegionInfo {
                name: spec.name.clone(),
                weight: spec.weight,
                status: RegionStatus::Active,
                lease_expires_at_ms: None,
            };
            self.region_order.push(spec.name.clone());
            self.regions.insert(spec.name, info.clone());
            regions.push(info);
        }
        Ok(Some((
            ChangeKind::Init {
                slot_count,
                lease_ttl_ms,
            },
            moves,
            regions,
        )))
    }

    fn renew(&mut self, region: &str) -> Outcome {
        let ttl = self.lease_ttl_ms;
        let now = self.clock_ms;
        let Some(status) = self.regions.get(region).map(|r| r.status) else {
            return reject(
                RejectCode::UnknownRegion,
                format!("no region named {region:?}"),
            );
        };
        let mut slots: Vec<SlotGrant> = Vec::new();
        for (slot, owner) in self.slots.iter().enumerate() {
            if owner.region != region {
                continue;
            }
            let slot = slot as u32;
            match slots.last_mut() {
                Some(run)
                    if run.last + 1 == slot
                        && run.epoch == owner.epoch
                        && run.frozen == owner.frozen =>
                {
                    run.last = slot;
                }
                _ => slots.push(SlotGrant {
                    first: slot,
                    last: slot,
                    epoch: owner.epoch,
                    frozen: owner.frozen,
                }),
            }
        }
        let mut accounts = Vec::new();
        let mut accounts_away = Vec::new();
        for (account, owner) in &self.overrides {
            let slot_owner = self.slots.get(usize::from(account.slot()));
            if owner.region == region {
                accounts.push(AccountGrant {
                    account: *account,
                    epoch: owner.epoch,
                });
            } else if slot_owner.is_some_and(|s| s.region == region) {
                accounts_away.push(*account);
            }
        }
        // A region that owns anything gets a live lease whatever its status (a region
        // marked down by hand may still be writing, and promote must wait for it). A
        // deposed region that owns nothing may renew to learn so, without its lease
        // looking live, which would only block promotes.
        let owns_something = !slots.is_empty() || !accounts.is_empty();
        if owns_something || status != RegionStatus::Down {
            if let Some(info) = self.regions.get_mut(region) {
                info.lease_expires_at_ms = Some(now.saturating_add(ttl as i64));
            }
        }
        Outcome::Lease(LeaseGrant {
            region: region.to_owned(),
            map_version: self.version,
            ttl_ms: ttl,
            granted_at_ms: now,
            slots,
            accounts,
            accounts_away,
        })
    }

    fn freeze(&mut self, slots: &[u32], frozen: bool) -> Change {
        if slots.is_empty() {
            return Err(reject(RejectCode::InvalidArgument, "no slots given"));
        }
        let mut indexes = Vec::with_capacity(slots.len());
        for &slot in slots {
            indexes.push(self.slot_index(slot)?);
        }
        let mut moves = Vec::new();
        for (slot, index) in slots.iter().zip(indexes) {
            let owner = &mut self.slots[index];
            if owner.frozen != frozen {
                owner.frozen = frozen;
                moves.push(Move {
                    target: Target::Slots {
                        first: *slot,
                        last: *slot,
                    },
                    from: Some(owner.region.clone()),
                    to: owner.region.clone(),
                    epoch: owner.epoch,
                    frozen,
                });
            }
        }
        if moves.is_empty() {
            return Ok(None);
        }
        let kind = if frozen {
            ChangeKind::Freeze
        } else {
            ChangeKind::Thaw
        };
        Ok(Some((kind, moves, Vec::new())))
    }

    fn transfer(&mut self, slots: &[SlotAtEpoch], to: &str) -> Change {
        self.active_region(to)?;
        if slots.is_empty() {
            return Err(reject(RejectCode::InvalidArgument, "no slots given"));
        }
        // Check every slot before touching any, so the command is all or nothing.
        let mut indexes = Vec::with_capacity(slots.len());
        for wanted in slots {
            let index = self.slot_index(wanted.slot)?;
            let current = &self.slots[index];
            if current.epoch != wanted.expected_epoch {
                return Err(reject(
                    RejectCode::StaleEpoch,
                    format!(
                        "slot {} is at epoch {}, not {}",
                        wanted.slot, current.epoch, wanted.expected_epoch
                    ),
                ));
            }
            if indexes.contains(&index) {
                return Err(reject(
                    RejectCode::InvalidArgument,
                    format!("slot {} is named twice", wanted.slot),
                ));
            }
            indexes.push(index);
        }
        let epoch = self.next_epoch();
        let moves = indexes
            .into_iter()
            .map(|index| self.move_slot(index, to, epoch))
            .collect();
        Ok(Some((ChangeKind::Transfer, moves, Vec::new())))
    }

    fn move_slot(&mut self, index: usize, to: &str, epoch: u64) -> Move {
        let previous = std::mem::replace(
            &mut self.slots[index],
            SlotOwner {
                region: to.to_owned(),
                epoch,
                frozen: false,
            },
        );
        Move {
            target: Target::Slots {
                first: index as u32,
                last: index as u32,
            },
            from: Some(previous.region),
            to: to.to_owned(),
            epoch,
            frozen: false,
        }
    }

    fn promote(&mut self, region: &str, force: bool) -> Change {
        let Some(dead) = self.regions.get(region).cloned() else {
            return Err(reject(
                RejectCode::UnknownRegion,
                format!("no region named {region:?}"),
            ));
        };
        // Promoting a region twice moves nothing; refusing it lets a client whose first
        // promote's answer was lost resend safely. (A region marked down by hand that
        // still owns slots is promoted as usual.)
        let owns_nothing = self.slots.iter().all(|s| s.region != region)
            && self.overrides.values().all(|o| o.region != region);
        if dead.status == RegionStatus::Down && owns_nothing {
            return Err(reject(
                RejectCode::RegionDown,
                format!("region {region} is already down (promoted)"),
            ));
        }
        let lease_live = dead
            .lease_expires_at_ms
            .is_some_and(|expiry| expiry > self.clock_ms);
        if lease_live && !force {
            return Err(reject(
                RejectCode::LeaseLive,
                format!(
                    "region {region}'s lease is live for {} ms more; wait, or force",
                    dead.lease_expires_at_ms.unwrap_or_default() - self.clock_ms
                ),
            ));
        }
        let survivors: Vec<(String, u64)> = self
            .region_order
            .iter()
            .filter(|name| name.as_str() != region)
            .filter_map(|name| self.regions.get(name))
            .filter(|r| r.status == RegionStatus::Active && r.weight > 0)
            .map(|r| (r.name.clone(), u64::from(r.weight)))
            .collect();
        if survivors.is_empty() {
            return Err(reject(
                RejectCode::NoSurvivors,
                "no active region with a weight above 0 can take the slots",
            ));
        }
        let owned: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].region == region)
            .collect();
        let weights: Vec<u64> = survivors.iter().map(|(_, w)| *w).collect();
        let shares = spread_by_weight(owned.len(), &weights);
        let epoch = self.next_epoch();
        let mut moves = Vec::with_capacity(owned.len());
        let mut next = owned.into_iter();
        for ((name, _), share) in survivors.iter().zip(shares) {
            for index in next.by_ref().take(share) {
                moves.push(self.move_slot(index, name, epoch));
            }
        }
        // Accounts homed at the dead region follow their slot's new owner, at the new
        // epoch: their rows may carry the dead region's override epoch, and an older
        // one would be refused.
        let homed_here: Vec<AccountId> = self
            .overrides
            .iter()
            .filter(|(_, owner)| owner.region == region)
            .map(|(account, _)| *account)
            .collect();
        for account in homed_here {
            let slot_owner = self.slots[usize::from(account.slot())].region.clone();
            let to = if slot_owner == region {
                survivors[0].0.clone()
            } else {
                slot_owner
            };
            moves.push(self.move_account(account, &to, epoch));
        }
        let info = self.regions.get_mut(region).map(|r| {
            r.status = RegionStatus::Down;
            r.clone()
        });
        Ok(Some((
            ChangeKind::Promote {
                region: region.to_owned(),
                forced: lease_live,
            },
            moves,
            info.into_iter().collect(),
        )))
    }

    fn move_account(&mut self, account: AccountId, to: &str, epoch: u64) -> Move {
        let from = self.overrides.get(&account).map_or_else(
            || self.slots[usize::from(account.slot())].region.clone(),
            |owner| owner.region.clone(),
        );
        self.overrides.insert(
            account,
            AccountOwner {
                region: to.to_owned(),
                epoch,
            },
        );
        Move {
            target: Target::Account(account),
            from: Some(from),
            to: to.to_owned(),
            epoch,
            frozen: false,
        }
    }

    fn rehome(&mut self, account: AccountId, to: &str, expected_epoch: Option<u64>) -> Change {
        self.active_region(to)?;
        self.slot_index(u32::from(account.slot()))?;
        let current = self.overrides.get(&account).map_or_else(
            || self.slots[usize::from(account.slot())].epoch,
            |owner| owner.epoch,
        );
        if let Some(expected) = expected_epoch {
            if expected != current {
                return Err(reject(
                    RejectCode::StaleEpoch,
                    format!("account {account} is at epoch {current}, not {expected}"),
                ));
            }
        }
        let epoch = self.next_epoch();
        let step = self.move_account(account, to, epoch);
        Ok(Some((ChangeKind::Rehome, vec![step], Vec::new())))
    }

    fn set_region(
        &mut self,
        name: &str,
        weight: Option<u32>,
        status: Option<RegionStatus>,
    ) -> Change {
        validate_region_name(name)?;
        let info = match self.regions.get_mut(name) {
            Some(info) => info,
            None => {
                let Some(weight) = weight else {
                    return Err(reject(
                        RejectCode::InvalidArgument,
                        format!("new region {name} needs a weight"),
                    ));
                };
                self.region_order.push(name.to_owned());
                self.regions.entry(name.to_owned()).or_insert(RegionInfo {
                    name: name.to_owned(),
                    weight,
                    status: RegionStatus::Active,
                    lease_expires_at_ms: None,
                })
            }
        };
        if let Some(weight) = weight {
            info.weight = weight;
        }
        if let Some(status) = status {
            info.status = status;
        }
        let info = info.clone();
        Ok(Some((ChangeKind::Region, Vec::new(), vec![info])))
    }
}

/// A command's effect: `None` when it changed nothing, else the record's parts.
type Change = Result<Option<(ChangeKind, Vec<Move>, Vec<RegionInfo>)>, Outcome>;

fn validate_region_name(name: &str) -> Result<(), Outcome> {
    let ok = ledger_wire::valid_region_name(name);
    if ok {
        Ok(())
    } else {
        Err(reject(
            RejectCode::InvalidArgument,
            format!("region name {name:?} must be 1-32 characters of a-z, 0-9 and -"),
        ))
    }
}

fn validate_regions(specs: &[RegionSpec]) -> Result<(), Outcome> {
    if specs.is_empty() {
        return Err(reject(RejectCode::InvalidArgument, "no regions given"));
    }
    for (i, spec) in specs.iter().enumerate() {
        validate_region_name(&spec.name)?;
        if specs[..i].iter().any(|s| s.name == spec.name) {
            return Err(reject(
                RejectCode::InvalidArgument,
                format!("region {} is named twice", spec.name),
            ));
        }
    }
    if specs.iter().all(|s| s.weight == 0) {
        return Err(reject(
            RejectCode::InvalidArgument,
            "at least one region needs a weight above 0",
        ));
    }
    Ok(())
}
