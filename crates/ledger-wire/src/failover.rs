//! What the failover tool and a region node say to each other under
//! `/internal/v1/failover/*`: the switchover's drain and digest, planned releases, a
//! region's status, and late events for reconciliation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AccountId;

/// Which accounts a switchover moves: whole slots (minus accounts homed elsewhere by
/// override) and single accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub slots: Vec<u32>,
    #[serde(default)]
    pub accounts: Vec<AccountId>,
    #[serde(default)]
    pub exclude: Vec<AccountId>,
}

/// Number of accounts in a scope and the sum of their seqs at one region. A replica
/// never runs ahead of the home, so equal digests mean equal accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub accounts: i64,
    pub seq_sum: i64,
}

/// Asks the old owner to stop writing the scope for good (it is frozen or moved away
/// at `map_version`), finish what is in flight, publish its outbox for the scope, and
/// report its high-water mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    pub map_version: u64,
    pub scope: Scope,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    pub region: String,
    /// Transactions that were running when the lease record changed, waited for.
    pub waited_transactions: usize,
    /// Outbox rows of the scope published while draining.
    pub published_while_draining: i64,
    pub high_water: Digest,
    pub took_ms: u64,
}

/// Tells the new owner that the previous owner of these slots and accounts (at these
/// epochs) has drained, so no fencing delay applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    #[serde(default)]
    pub slots: Vec<SlotEpoch>,
    #[serde(default)]
    pub accounts: Vec<AccountEpoch>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotEpoch {
    pub slot: u32,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEpoch {
    pub account: AccountId,
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReport {
    pub usable: bool,
    pub took_ms: u64,
}

/// One region's view of itself, for `failover status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub region: String,
    pub map_version: u64,
    pub lease_live: bool,
    pub slots_held: usize,
    pub outbox_unpublished: i64,
    pub oldest_unpublished_ms: Option<i64>,
    /// Per origin region: events behind and age of the newest applied one.
    pub replication: Vec<ReplicationLag>,
    /// Late events by status (pending, replayed, flagged, duplicate, ...).
    pub late_events: BTreeMap<String, i64>,
    /// Per currency: transfers debited here and not yet credited or refunded.
    #[serde(default)]
    pub money_in_flight: Vec<MoneyInFlight>,
    /// The fencing delay this node waits after gaining slots by promote, from its own
    /// settings (`None` without an ownership service).
    #[serde(default)]
    pub fence_delay_ms: Option<u64>,
}

/// Money that left an account and has not yet arrived or come back (one currency, as
/// one region's ledger holds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoneyInFlight {
    pub currency: String,
    pub transfers: i64,
    pub amount: String,
    pub oldest_seconds: f64,
}

/// A region hands late events of accounts it does not own to their current owner
/// (`POST /internal/v1/failover/late/handoff`); each event in the form
/// `ledger.late_to_hand_off` renders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateHandoff {
    pub events: Vec<serde_json::Value>,
}

/// What one handoff pass sent (`POST /internal/v1/failover/late/push`, `failover
/// reconcile --push`): events per owner, how many the owners had already decided, and
/// the owners that could not be reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatePush {
    pub handed_off: BTreeMap<String, usize>,
    pub already_decided: usize,
    pub failed: Vec<String>,
}

/// What the receiving region had already decided about handed-off events (the others
/// it keeps pending and decides when it owns their account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateDecision {
    pub event_id: Uuid,
    pub status: String,
    pub detail: Option<String>,
    pub resolved_by: Option<String>,
    pub reconciled_seq: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationLag {
    pub origin: String,
    pub lag_events: i64,
    pub lag_seconds: f64,
    /// How long ago the replicator measured it.
    pub measured_ms_ago: i64,
}

/// One late event and what reconciliation made of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateEvent {
    pub event_id: Uuid,
    pub account: String,
    pub seq: i64,
    pub epoch: i64,
    pub origin_region: String,
    pub event_type: String,
    pub reason: String,
    pub status: String,
    pub amount: Option<String>,
    pub detail: Option<String>,
    pub received_at: String,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
    pub reconciled_seq: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgeRequest {
    pub by: String,
    #[serde(default)]
    pub note: String,
}

/// Every region's ledger reduced for the invariants: per-account state, totals, and
/// the entries' (account, seq) -> (event, epoch, origin), so the tool can compare
/// regions and check each entry against the ownership history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSnapshot {
    pub region: String,
    pub accounts: Vec<AuditAccount>,
    pub entries: Vec<AuditEntry>,
    /// Per currency: sum of balances and sum of money that entered minus left.
    pub totals: BTreeMap<String, AuditTotal>,
    pub late_pending: i64,
    /// Every transfer this region knows, with its saga state.
    #[serde(default)]
    pub transfers: Vec<AuditTransfer>,
    /// Where the next page starts (`None`: this was the last page). A page holds up to
    /// `limit` accounts with all their entries and up to `limit` transfers; totals and
    /// late events are on every page.
    #[serde(default)]
    pub next: Option<AuditCursor>,
}

/// Query of one audit page: accounts after `account`, transfers after `transfer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCursor {
    /// Last account id of the previous page (its text form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Uuid>,
    /// True once the accounts (or the transfers) are exhausted.
    #[serde(default)]
    pub accounts_done: bool,
    #[serde(default)]
    pub transfers_done: bool,
}

/// One page of a dead region's recent events a survivor holds, for the promote
/// exchange (`POST /internal/v1/failover/export`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    pub origin: String,
    pub since_s: u64,
    #[serde(default)]
    pub after: Option<ExportCursor>,
    pub limit: u32,
}

/// Position in an export: (part, account, seq, event id), the export's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCursor {
    pub part: i32,
    pub account: i64,
    pub seq: i64,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportPage {
    pub events: Vec<ExchangedEvent>,
    /// `None` when this page was the last.
    pub next: Option<ExportCursor>,
}

/// One event in the form `ledger.apply_events` reads (the appliers' flattened envelope).
/// `event` is what a late or pending copy stores; the exporter leaves `data` out of it
/// and the importer puts it back, so an event does not travel with its data twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangedEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub account: i64,
    pub seq: i64,
    pub epoch: i64,
    pub origin: String,
    pub time: String,
    pub data: serde_json::Value,
    #[serde(default)]
    pub event: serde_json::Value,
}

/// `POST /internal/v1/failover/import`: events another survivor exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRequest {
    pub events: Vec<ExchangedEvent>,
}

/// Count of imported events per apply outcome (applied, duplicate, late, pending, ...).
pub type ImportReport = BTreeMap<String, i64>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTransfer {
    pub id: Uuid,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAccount {
    pub id: String,
    pub seq: i64,
    pub epoch: i64,
    pub balance: String,
    /// Whether the account holds an entry flagged for review (an allowed overdraft).
    pub flagged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub account: String,
    pub seq: i64,
    pub epoch: i64,
    pub origin: String,
    pub event_id: Option<Uuid>,
    pub txn_id: Uuid,
    pub kind: String,
    /// The late event this entry replays, for reconciliation entries.
    pub reconciles: Option<Uuid>,
    /// The transfer a saga entry (debit, credit, refund) belongs to.
    #[serde(default)]
    pub transfer_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTotal {
    pub balances: String,
    pub external_net: String,
    /// Debited and not yet credited or refunded, as this region's ledger shows it.
    #[serde(default)]
    pub in_flight: String,
}
