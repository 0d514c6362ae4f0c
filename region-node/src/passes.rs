//! The loop shared by the node's background workers (transfer saga, reconciler): run a
//! pass over the work this region owns; a pass that did as much as its limit runs again
//! at once, anything less waits for a wake-up or the poll interval. Work done wakes the
//! relay, since each step wrote outbox rows.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::NodeError;

pub struct Passes {
    /// For the log line of a failed pass.
    pub what: &'static str,
    pub limit: usize,
    pub poll: Duration,
    pub woken: Arc<Notify>,
    pub outbox_written: Arc<Notify>,
}

impl Passes {
    /// Runs `pass` (returning how many items it handled) until `shutdown`.
    pub async fn run<F, Fut>(self, shutdown: &CancellationToken, mut pass: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<usize, NodeError>>,
    {
        while !shutdown.is_cancelled() {
            match pass().await {
                Ok(done) if done > 0 => {
                    self.outbox_written.notify_one();
                    if done >= self.limit {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "{} pass failed; retrying", self.what),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.woken.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}
