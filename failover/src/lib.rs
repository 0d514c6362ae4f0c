//! The failover tool's library: talking to a live deployment (the ownership service
//! and every region node's signed internal API), and the operations an SRE runs on it:
//! status, switchover (slots, a region, one account), promote (by hand or automatic),
//! reconciliation, failback, and drills that end in a report with the invariants of
//! ARCHITECTURE.md checked on every region.

pub mod audit;
pub mod cluster;
pub mod drill;
pub mod promote;
pub mod status;
pub mod switchover;

pub use cluster::{Cluster, Targets};

/// Everything an operation can fail with; the map is left as the error says.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("ownership service: {0}")]
    Ownership(#[from] ownership_client::ClientError),
    #[error("region {region}: {detail}")]
    Node { region: String, detail: String },
    #[error("no node address for region {0}; pass --node {0}=http://host:port")]
    UnknownRegion(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{step} timed out after {waited_ms} ms")]
    Timeout { step: String, waited_ms: u64 },
    #[error("{0}")]
    Refused(String),
}
