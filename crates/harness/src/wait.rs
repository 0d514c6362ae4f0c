//! Waiting on a condition with a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Polls `condition` every `every` until it returns `Some`, or gives up at `timeout`.
pub async fn wait_until<T, F, Fut>(
    timeout: Duration,
    every: Duration,
    mut condition: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
