//! The node's side of the SRE tool's calls (`/internal/v1/failover/*`, handlers in
//! `http/failover.rs`), one concern per file:
//! - [`drain`]: a switchover's drain (the database stops letting this region write the
//!   scope, in-flight transactions finish, the outbox is published), the digest both
//!   sides compare, and taking a planned release;
//! - [`status`]: this region's status and money in flight;
//! - [`audit`]: the audit snapshot, a page at a time;
//! - [`exchange`]: the promote exchange of a dead region's recent events, a page at a
//!   time;
//! - [`late`]: late events (listing, acknowledgement) and the reconciler worker that
//!   replays them for accounts this region owns now (`ledger.reconcile_late`).

pub mod audit;
pub mod drain;
pub mod exchange;
pub mod late;
pub mod status;

use ledger_wire::failover::Scope;
use ledger_wire::AccountId;

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
