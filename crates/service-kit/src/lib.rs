//! Process plumbing shared by every ledger service binary (region node, ownership
//! voter, replicator, proxy): one supervisor of named tasks under one
//! cancellation token, SIGTERM/SIGINT handling, and the logging set-up.

pub mod supervisor;
pub mod telemetry;

pub use supervisor::{cancel_on_signals, Supervisor, SupervisorError};
