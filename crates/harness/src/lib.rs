//! Process harness: real PostgreSQL clusters and ledger binaries on loopback.
//!
//! Everything started here is a child process whose pid we hold; it is stopped by that
//! pid (never by name) when its guard drops, and lives in a directory of its own.
//! Readiness is always polled against a deadline, never slept for.

pub mod broker;
pub mod dirs;
pub mod log_scan;
pub mod netns;
pub mod node;
pub mod pg;
pub mod ports;
pub mod process;
pub mod tls;
pub mod voters;
pub mod wait;

pub use broker::Broker;
pub use dirs::WorkDir;
pub use pg::{PgCluster, PgOptions, PgTls};
pub use ports::{free_block, free_port};
pub use process::ChildGuard;
pub use voters::{VoterCluster, VoterTiming};
pub use wait::wait_until;

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} not found; run scripts/setup.sh or set {1}")]
    MissingBinary(&'static str, &'static str),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what} not ready after {waited:?}{}", log_hint(.log))]
    Timeout {
        what: String,
        waited: Duration,
        log: Option<PathBuf>,
    },
    #[error("{what} exited early ({status}){}", log_hint(.log))]
    Exited {
        what: String,
        status: String,
        log: Option<PathBuf>,
    },
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

fn log_hint(log: &Option<PathBuf>) -> String {
    log.as_ref()
        .map(|p| format!("; see {}", p.display()))
        .unwrap_or_default()
}

pub(crate) fn io_context(
    context: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}
