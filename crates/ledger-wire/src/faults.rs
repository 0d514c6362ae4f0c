//! A schedule of faults, as the chaos harness (`chaos run`) writes it and the failover
//! tool's drill (`failover drill --scenario schedule --schedule-file F`) runs it during
//! its workload: the contract between the two tools.

use serde::{Deserialize, Serialize};

/// One fault of a schedule: at `at_ms` after the workload started, run `inject`; after
/// `hold_ms`, run `heal` (if any: a pause heals itself). Shell commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStep {
    /// The fault's kind, e.g. `partition`, `kill-broker`, `region-failover`.
    pub fault: String,
    /// What it acts on, e.g. `us-east` or `us-east>ap-south`.
    pub target: String,
    pub at_ms: u64,
    pub hold_ms: u64,
    pub inject: String,
    #[serde(default)]
    pub heal: Option<String>,
    /// The region whose accounts the fault makes unwritable, if one: recovery is the
    /// time from the heal to the first acknowledged write to one of its accounts.
    #[serde(default)]
    pub affects: Option<String>,
    /// Kill, promote once the lease ran out, restart (`heal`), wait for the sagas,
    /// fail back: the drill runs the whole sequence (`inject` kills, `heal` restarts).
    #[serde(default)]
    pub failover: bool,
}

/// The schedule file: the seed it came from and its steps, in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSchedule {
    pub seed: u64,
    pub steps: Vec<FaultStep>,
    /// How long the workload runs, from its start: past the last heal, so that every
    /// fault's recovery can be measured. 0: until the last step is done.
    #[serde(default)]
    pub run_ms: u64,
}
