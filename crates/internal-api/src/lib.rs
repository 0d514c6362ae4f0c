//! The internal API's contract on the caller's side, shared by region nodes (forwarding,
//! replica checks, late-event handoff) and the failover tool, so that neither links the
//! other: [`auth`] signs and verifies requests with the deployment's secret, and
//! [`SignedCaller`] is the one HTTP client that sends signed calls to `/internal{path}`
//! of a region node; [`verify`] is the receiving side every signed server shares. Route paths and bodies are in `ledger_wire::internal` and
//! `ledger_wire::failover`.

pub mod auth;
mod caller;
pub mod verify;

pub use auth::{AuthError, Credentials, Signer, MAX_SKEW};
pub use caller::{Answer, CallError, SignedCaller};
pub use verify::{verify_request, Refusal, Verified};
