//! The local deployment: N regions on loopback, each with its own PostgreSQL, broker,
//! ownership voter, proxy, region node and replicator in one process group, with ports
//! and data dirs derived from the region index; and the demo traffic that runs on it.

pub mod active_passive;
pub mod delay;
pub mod demo;
pub mod deployment;
pub mod forwarding;
pub mod geography;
pub mod locations;
pub mod network;
pub mod proc_stat;
pub mod proxy;
pub mod run;
pub mod schedule;
pub mod storage;
pub mod topology;
pub mod wait;

pub use deployment::{Deployment, RegionState, UpOptions};
pub use network::Network;
pub use topology::{Topology, DEFAULT_BASE_PORT, REGION_NAMES};
