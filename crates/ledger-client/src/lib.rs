//! `ledger-client`: the public API's client for applications anywhere in the world.
//!
//! Given every region's URL it sends each request to the nearest healthy region
//! ([`routing`]: measured latency, a breaker per region), retries what a region could
//! not serve at the next one under the same Idempotency-Key within a total budget and
//! waits out rate limits where they were given ([`retry`]), and keeps read-your-writes
//! across regions with `min_seq` ([`session`]); learns the regions from any one of
//! them ([`Client::discover`]) and, home-aware, sends writes straight to their home.
//! Tools whose subject is one region's own answers (drills, tests of a node, the demo)
//! use [`RegionClient`] ([`pinned`]): one attempt, one region, every routing header.

pub mod client;
pub mod http;
pub mod pinned;
pub mod retry;
pub mod routing;
pub mod session;

pub use client::{
    Answer, Client, ClientError, Method, RawAnswer, Request, Transport, TransportFailure,
};
pub use http::HttpTransport;
pub use pinned::{RegionClient, Reply};
pub use retry::RetryConfig;
pub use routing::{Breaker, RoutingConfig};
