//! The local deployment: regions on loopback, each with its own PostgreSQL and region
//! node in one process group, with ports and data dirs derived from the region index.

pub mod deployment;

pub use deployment::{Deployment, RegionState, DEFAULT_BASE_PORT, REGION_NAMES};
