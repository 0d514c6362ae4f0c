//! Request and response bodies of the public API (v1).
//!
//! Requests refuse unknown fields so that a typo (`ammount`) is an error rather than a
//! silently ignored field. Amounts in requests are strings and parsed with
//! [`crate::parse_amount`]; amounts in responses are decimals at the currency's scale,
//! serialised as strings.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AccountId;

/// Longest accepted free-text reference on an entry or transfer.
pub const MAX_REFERENCE_LEN: usize = 140;
/// Default and largest page size of `GET /v1/accounts/{id}/ledger`.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// ISO 4217 code of a supported currency, e.g. `EUR`.
    #[schema(value_type = crate::api_schema::CurrencyCode)]
    pub currency: String,
    /// Region that should own the account; defaults to the region that receives the request.
    #[serde(default)]
    #[schema(value_type = Option<crate::api_schema::RegionName>)]
    pub home_region: Option<String>,
}

/// Body of a deposit or a withdrawal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Positive decimal string at most at the currency's scale, e.g. `"12.50"`.
    #[schema(value_type = crate::api_schema::AmountText)]
    pub amount: String,
    /// Free text for the account holder, at most 140 characters.
    #[serde(default)]
    #[schema(value_type = Option<crate::api_schema::ReferenceText>)]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "ac_0a3f_00d1e2f3a4b5", "to": "ac_1b20_00a9b8c7d6e5", "amount": "12.50"}))]
pub struct CreateTransferRequest {
    /// The account debited.
    #[schema(value_type = String, pattern = "^ac_[0-9a-f]{4}_[0-9a-f]{12}$", example = "ac_0a3f_00d1e2f3a4b5")]
    pub from: AccountId,
    /// The account credited: another account than `from` (the same one is refused with
    /// 422 same-account-transfer), in the same currency.
    #[schema(value_type = String, pattern = "^ac_[0-9a-f]{4}_[0-9a-f]{12}$", example = "ac_1b20_00a9b8c7d6e5")]
    pub to: AccountId,
    #[schema(value_type = crate::api_schema::AmountText)]
    pub amount: String,
    #[serde(default)]
    #[schema(value_type = Option<crate::api_schema::ReferenceText>)]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Open,
    Closed,
}

/// Where a read was served from and how fresh it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Freshness {
    /// `home` when the serving region owns the account (the copy is authoritative),
    /// `replica` otherwise.
    pub source: ReadSource,
    /// Time of the newest change this copy reflects.
    #[serde(with = "crate::timestamp")]
    pub as_of: DateTime<Utc>,
    /// How far behind the home the copy may be, in milliseconds: 0 at the home; at a
    /// replica, the applier's last reported lag (grown by the report's age once that is
    /// over 5 s). Absent when no applier has reported for the home region yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadSource {
    Home,
    Replica,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub id: AccountId,
    pub currency: String,
    #[schema(value_type = String, example = "12.50")]
    pub balance: Decimal,
    /// Number of committed writes; each write adds exactly one.
    pub seq: i64,
    /// Ownership epoch of the last write.
    pub epoch: i64,
    pub home_region: String,
    pub slot: u16,
    pub status: AccountStatus,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Deposit,
    Withdrawal,
    TransferDebit,
    TransferCredit,
    /// Money returned to the source of a refused cross-region transfer.
    TransferRefund,
}

/// One committed change of one account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Entry {
    pub account_id: AccountId,
    pub seq: i64,
    pub epoch: i64,
    pub kind: EntryKind,
    /// Signed change of the balance.
    #[schema(value_type = String, example = "-12.50")]
    pub amount: Decimal,
    /// Balance after this entry.
    #[schema(value_type = String, example = "87.50")]
    pub balance: Decimal,
    pub currency: String,
    /// The business transaction this entry belongs to; its ledger lines sum to zero.
    pub txn_id: Uuid,
    pub reference: Option<String>,
    pub transfer_id: Option<Uuid>,
    /// Region whose node committed the entry.
    pub origin_region: String,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
    /// Reconciliation entries only: the late event (an acknowledged write of a deposed
    /// home) this entry replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciles: Option<Uuid>,
    /// Reconciliation entries only: replayed into an overdraft, flagged for review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Source debited, destination not yet credited (cross-region saga in flight).
    Debited,
    /// Both sides booked.
    Completed,
    /// The destination's home refused (unknown or closed account, other currency); the
    /// refund at the source is under way.
    Rejected,
    /// Destination refused; the source is refunded.
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub id: Uuid,
    pub from: AccountId,
    pub to: AccountId,
    #[schema(value_type = String, example = "12.50")]
    pub amount: Decimal,
    pub currency: String,
    pub state: TransferState,
    /// Why the destination refused, for rejected and refunded transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub reference: Option<String>,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LedgerPage {
    pub account_id: AccountId,
    pub entries: Vec<Entry>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Serve from this region's copy, with its staleness.
    #[default]
    Local,
    /// Read at the account's home region.
    Strong,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountQuery {
    /// `local` (default): this region's copy with its staleness; `strong`: read at the
    /// account's home.
    #[serde(default)]
    #[param(inline)]
    pub consistency: Option<Consistency>,
    /// Answer only with a copy that has at least this seq.
    #[param(minimum = 0, maximum = 9007199254740991_i64)]
    pub min_seq: Option<i64>,
}

/// One region of the deployment and where clients reach its public API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegionEndpoint {
    pub name: String,
    /// Base URL of the region's public API (paths such as `/v1/accounts` go after it).
    pub url: String,
}

/// Answer of `GET /v1/regions`: every region of the deployment (empty when the
/// deployment did not configure them, `LEDGER_PUBLIC_URLS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Regions {
    pub regions: Vec<RegionEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub region: String,
}
