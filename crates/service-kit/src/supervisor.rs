//! One supervisor per process: named tasks under one cancellation token.
//!
//! When a task fails, or the token is cancelled (SIGTERM), every task is told to stop
//! and given a grace period to drain; tasks still running after it are aborted.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("task {name} failed: {message}")]
    TaskFailed { name: &'static str, message: String },
    #[error("task {name} panicked")]
    TaskPanicked { name: &'static str },
}

#[derive(Debug)]
pub struct Supervisor {
    token: CancellationToken,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
}

impl Supervisor {
    pub fn new(token: CancellationToken) -> Self {
        Supervisor {
            token,
            tasks: JoinSet::new(),
        }
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Runs `task` until it ends; an error ends the whole process's work.
    pub fn spawn<F, E>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.tasks
            .spawn(async move { (name, task.await.map_err(|e| e.to_string())) });
    }

    /// Waits until the token is cancelled or a task ends, then drains the rest for at
    /// most `grace`. Returns the first failure, if any.
    pub async fn run(mut self, grace: Duration) -> Result<(), SupervisorError> {
        let mut first_error = None;
        tokio::select! {
            () = self.token.cancelled() => tracing::info!("shutdown requested, draining"),
            Some(joined) = self.tasks.join_next() => {
                first_error = outcome(joined);
                self.token.cancel();
            }
        }
        let drain = async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Some(error) = outcome(joined) {
                    first_error.get_or_insert(error);
                }
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "grace period over, aborting tasks"
            );
            self.tasks.shutdown().await;
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn outcome(
    joined: Result<(&'static str, Result<(), String>), tokio::task::JoinError>,
) -> Option<SupervisorError> {
    match joined {
        Ok((name, Ok(()))) => {
            tracing::info!(task = name, "task finished");
            None
        }
        Ok((name, Err(message))) => {
            tracing::error!(task = name, %message, "task failed");
            Some(SupervisorError::TaskFailed { name, message })
        }
        Err(error) => {
            tracing::error!(%error, "task panicked or was aborted");
            Some(SupervisorError::TaskPanicked { name: "unknown" })
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
            () = token.cancelled() => return,
        }
        token.cancel();
    });
    Ok(())
}
