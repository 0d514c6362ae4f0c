//! Ownership wire types: who is home for every slot and account, the commands that
//! change it, their answers, and the change history.
//!
//! Shared by the ownership service, its client library, the region nodes and the
//! failover tool. Times are milliseconds since the Unix epoch as stamped by the Raft
//! leader into each proposal; they order history and decide whether a lease is live
//! *as the ownership service sees it*. A region's own write fence never trusts them:
//! it counts the ttl on its monotonic clock from when it sent the renewal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::AccountId;

/// Owner of one slot. `frozen` slots are owned but not writable (a switchover is
/// draining them), so a region must not start writes for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotOwner {
    pub region: String,
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

/// Owner of one account that was moved away from its slot's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOwner {
    pub region: String,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionStatus {
    /// Serving; takes slots in a promote.
    Active,
    /// Serving what it owns, but takes no new slots in a promote.
    Draining,
    /// Deposed by a promote or declared down; takes no slots.
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInfo {
    pub name: String,
    pub weight: u32,
    pub status: RegionStatus,
    /// When the region's lease runs out by the ownership service's clock; `None`
    /// until its first renewal.
    pub lease_expires_at_ms: Option<i64>,
}

/// The whole ownership map at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipMap {
    /// Increases with every change to the map (ownership, freezes, regions); lease
    /// renewals alone do not change it.
    pub version: u64,
    /// The cluster-wide epoch counter: the epoch of the latest ownership change.
    pub epoch: u64,
    pub slot_count: u32,
    pub lease_ttl_ms: u64,
    pub regions: Vec<RegionInfo>,
    /// Indexed by slot number; empty before the cluster is initialised.
    pub slots: Vec<SlotOwner>,
    pub overrides: BTreeMap<AccountId, AccountOwner>,
}

impl OwnershipMap {
    /// Home region and epoch of `account`, or `None` if its slot is out of range.
    pub fn home_of(&self, account: AccountId) -> Option<(&str, u64)> {
        if let Some(owner) = self.overrides.get(&account) {
            return Some((owner.region.as_str(), owner.epoch));
        }
        let owner = self.slots.get(usize::from(account.slot()))?;
        Some((owner.region.as_str(), owner.epoch))
    }

    /// Number of slots each region owns.
    pub fn slot_counts(&self) -> BTreeMap<&str, usize> {
        let mut counts: BTreeMap<&str, usize> =
            self.regions.iter().map(|r| (r.name.as_str(), 0)).collect();
        for owner in &self.slots {
            *counts.entry(owner.region.as_str()).or_default() += 1;
        }
        counts
    }

    /// Applies one history record, so a watcher can follow the map from changes alone.
    pub fn apply(&mut self, change: &ChangeRecord) {
        self.version = change.version;
        self.epoch = self.epoch.max(change.epoch);
        if let ChangeKind::Init {
            slot_count,
            lease_ttl_ms,
        } = change.kind
        {
            self.slot_count = slot_count;
            self.lease_ttl_ms = lease_ttl_ms;
            self.slots = Vec::with_capacity(slot_count as usize);
        }
        for region in &change.regions {
            match self.regions.iter_mut().find(|r| r.name == region.name) {
                Some(known) => *known = region.clone(),
                None => self.regions.push(region.clone()),
            }
        }
        for step in &change.moves {
            match step.target {
                Target::Slots { first, last } => {
                    for slot in first..=last {
                        let owner = SlotOwner {
                            region: step.to.clone(),
                            epoch: step.epoch,
                            frozen: step.frozen,
                        };
                        let index = slot as usize;
                        if index < self.slots.len() {
                            self.slots[index] = owner;
                        } else if index == self.slots.len() {
                            self.slots.push(owner);
                        }
                    }
                }
                Target::Account(account) => {
                    self.overrides.insert(
                        account,
                        AccountOwner {
                            region: step.to.clone(),
                            epoch: step.epoch,
                        },
                    );
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSpec {
    pub name: String,
    pub weight: u32,
}

/// A slot named with the epoch the caller believes it has (compare-and-set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAtEpoch {
    pub slot: u32,
    pub expected_epoch: u64,
}

/// Every command the ownership state machine accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Once per cluster: the regions, the slot count, the lease ttl; slots are spread
    /// by weight in contiguous runs, in the order the regions are given.
    InitCluster {
        slot_count: u32,
        lease_ttl_ms: u64,
        regions: Vec<RegionSpec>,
    },
    /// Extends the region's lease; the answer lists what it owns now.
    RenewLease { region: String },
    /// Marks slots frozen (or thawed): their owner keeps them but must not write.
    FreezeSlots { slots: Vec<u32>, frozen: bool },
    /// Moves slots to `to` if every slot still has its expected epoch; all or nothing.
    TransferSlots { slots: Vec<SlotAtEpoch>, to: String },
    /// Moves all of a dead region's slots and accounts to the active survivors by
    /// weight and marks it down. Refused while its lease is live unless `force`.
    Promote { region: String, force: bool },
    /// Moves one account's home; `expected_epoch` (if given) must match its current one.
    RehomeAccount {
        account: AccountId,
        to: String,
        expected_epoch: Option<u64>,
    },
    /// Adds a region or changes its weight or status.
    SetRegion {
        region: String,
        weight: Option<u32>,
        status: Option<RegionStatus>,
    },
}

impl Command {
    /// Short stable name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::InitCluster { .. } => "init_cluster",
            Command::RenewLease { .. } => "renew_lease",
            Command::FreezeSlots { .. } => "freeze_slots",
            Command::TransferSlots { .. } => "transfer_slots",
            Command::Promote { .. } => "promote",
            Command::RehomeAccount { .. } => "rehome_account",
            Command::SetRegion { .. } => "set_region",
        }
    }
}

/// What a client sends: the command with who asks and why (kept in the history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub actor: String,
    #[serde(default)]
    pub reason: String,
    #[serde(flatten)]
    pub command: Command,
}

/// Why the state machine refused a command; the map is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    NotInitialized,
    AlreadyInitialized,
    InvalidArgument,
    UnknownRegion,
    RegionDown,
    StaleEpoch,
    LeaseLive,
    NoSurvivors,
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The map changed; `change` is the history record (absent for no-op commands).
    Applied {
        version: u64,
        epoch: u64,
        change: Option<Box<ChangeRecord>>,
    },
    Lease(LeaseGrant),
    Rejected {
        code: RejectCode,
        message: String,
    },
}

/// The answer to a lease renewal: what the region may write now. A slot or account
/// not listed is not the region's (any more) and must be dropped at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub region: String,
    pub map_version: u64,
    pub ttl_ms: u64,
    pub granted_at_ms: i64,
    /// The region's slots as runs of consecutive slots with one epoch and state.
    pub slots: Vec<SlotGrant>,
    /// Accounts homed here by override.
    pub accounts: Vec<AccountGrant>,
    /// Accounts in this region's slots that are homed elsewhere by override.
    pub accounts_away: Vec<AccountId>,
}

/// A run of consecutive slots granted at one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotGrant {
    pub first: u32,
    pub last: u32,
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountGrant {
    pub account: AccountId,
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeKind {
    Init { slot_count: u32, lease_ttl_ms: u64 },
    Freeze,
    Thaw,
    Transfer,
    Promote { region: String, forced: bool },
    Rehome,
    Region,
}

impl LeaseGrant {
    /// Every granted slot, one by one.
    pub fn slot_numbers(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().flat_map(|run| run.first..=run.last)
    }
}

impl Move {
    /// Whether `next` continues this move's slot run (same owners, epoch and state).
    fn continued_by(&self, next: &Move) -> bool {
        match (self.target, next.target) {
            (Target::Slots { last, .. }, Target::Slots { first, .. }) => {
                first == last + 1
                    && self.from == next.from
                    && self.to == next.to
                    && self.epoch == next.epoch
                    && self.frozen == next.frozen
            }
            _ => false,
        }
    }
}

/// Merges consecutive single-slot moves into runs, keeping order.
pub fn merge_slot_runs(moves: Vec<Move>) -> Vec<Move> {
    let mut merged: Vec<Move> = Vec::with_capacity(moves.len());
    for step in moves {
        match merged.last_mut() {
            Some(previous) if previous.continued_by(&step) => {
                if let (Target::Slots { last, .. }, Target::Slots { last: new_last, .. }) =
                    (&mut previous.target, step.target)
                {
                    *last = new_last;
                }
            }
            _ => merged.push(step),
        }
    }
    merged
}

impl ChangeKind {
    /// Short stable name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::Init { .. } => "init",
            ChangeKind::Freeze => "freeze",
            ChangeKind::Thaw => "thaw",
            ChangeKind::Transfer => "transfer",
            ChangeKind::Promote { .. } => "promote",
            ChangeKind::Rehome => "rehome",
            ChangeKind::Region => "region",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Slots `first..=last`.
    Slots {
        first: u32,
        last: u32,
    },
    Account(AccountId),
}

/// The new owner of a run of slots, or of one account, within a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub target: Target,
    pub from: Option<String>,
    pub to: String,
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

/// One entry of the ownership history: every change to the map, who asked, when, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub version: u64,
    pub epoch: u64,
    pub at_ms: i64,
    pub actor: String,
    pub reason: String,
    #[serde(flatten)]
    pub kind: ChangeKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<Move>,
    /// Regions as they are after the change, for the regions it touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionInfo>,
}

/// The answer to a watch: the changes after `since`, oldest first, and the version
/// they bring the map to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchReply {
    pub version: u64,
    pub changes: Vec<ChangeRecord>,
}

/// One voter's view of the Raft cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    pub state: String,
    pub current_leader: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: BTreeMap<u64, String>,
    pub learners: BTreeMap<u64, String>,
}
