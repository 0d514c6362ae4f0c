//! Wire types shared by every ledger service and client.
//!
//! Nothing here talks to a network or a database: these are the shapes that cross
//! process boundaries (HTTP bodies, ids, problem documents), so that the region node,
//! the tools and the tests agree on them by construction.

pub mod account_id;
pub mod api;
pub mod api_keys;
pub mod api_schema;
pub mod dlq;
pub mod events;
pub mod failover;
pub mod faults;
pub mod internal;
pub mod money;
pub mod ownership;
pub mod problem;
pub mod timestamp;
pub mod trace;

pub use account_id::{AccountId, AccountIdError, MAX_SLOTS};
pub use money::{parse_amount, AmountError, Currency, MAX_AMOUNT};
pub use problem::{Problem, ProblemType};
pub use trace::TraceParent;

/// Response header naming the region whose node produced the answer.
pub const HEADER_SERVED_BY: &str = "x-served-by-region";
/// Response header naming the account's home region (the only region that may write it).
pub const HEADER_HOME_REGION: &str = "x-home-region";
/// Request header every write must carry.
pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header set when the answer is a stored answer to an earlier request.
pub const HEADER_IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Request/response header carrying the correlation id of one request.
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// W3C trace context header.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Request header choosing a write's durability: `local` (default: answer after the
/// home's commit) or `replicated` (answer once another region holds a copy).
pub const HEADER_ACK: &str = "ack";
/// Response header naming the region a request was forwarded to (the account's home),
/// when the region that answered is not the home.
pub const HEADER_FORWARDED_TO: &str = "x-forwarded-to-region";

/// Internal API (region to region): the calling region, the time of signing (Unix ms)
/// and the HMAC-SHA256 signature of the request (see region-node's `peers::auth`).
pub const HEADER_CALLER_REGION: &str = "x-ledger-caller";
pub const HEADER_SIGNED_AT: &str = "x-ledger-signed-at";
pub const HEADER_SIGNATURE: &str = "x-ledger-signature";

/// Whether `name` may name a region: 1-32 characters of `a-z`, `0-9` and `-` (it ends
/// up in topic names, metric labels, URLs and database rows).
pub fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
