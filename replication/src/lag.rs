//! Replication lag of one applier: events in the origin's topic not yet applied here
//! (from the broker's high watermarks) and, while any wait, the age of the newest
//! applied event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::Metrics;

const WATCH_INTERVAL: Duration = Duration::from_secs(1);
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct State {
    /// Next offset to apply, per partition (absent: from the beginning).
    next: HashMap<i32, i64>,
    newest_applied: Option<DateTime<Utc>>,
}

/// Where the applier is, shared with its lag watcher.
#[derive(Debug, Clone, Default)]
pub struct Positions(Arc<Mutex<State>>);

impl Positions {
    pub fn new(partitions: &[i32], stored: &HashMap<i32, i64>) -> Positions {
        let next = partitions
            .iter()
            .filter_map(|p| stored.get(p).map(|o| (*p, *o)))
            .collect();
        Positions(Arc::new(Mutex::new(State {
            next,
            newest_applied: None,
        })))
    }

    pub fn advance(
        &self,
        next: &HashMap<i32, (i64, Option<DateTime<Utc>>)>,
        newest: Option<DateTime<Utc>>,
    ) {
        if let Ok(mut state) = self.0.lock() {
            for (partition, (offset, _)) in next {
                state.next.insert(*partition, *offset);
            }
            state.newest_applied = state.newest_applied.max(newest);
        }
    }

    fn snapshot(&self) -> (HashMap<i32, i64>, Option<DateTime<Utc>>) {
        self.0
            .lock()
            .map(|s| (s.next.clone(), s.newest_applied))
            .unwrap_or_default()
    }
}

/// Updates `lag_events{origin}` and `lag_seconds{origin}` every second until aborted.
pub async fn watch(
    consumer: Arc<StreamConsumer>,
    topic: String,
    origin: String,
    positions: Positions,
    metrics: Metrics,
) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tick.tick().await;
        let (next, newest) = positions.snapshot();
        let (consumer, name) = (consumer.clone(), topic.clone());
        let partitions: Vec<i32> = {
            let mut all: Vec<i32> = next.keys().copied().collect();
            if let Ok(assigned) = consumer.assignment() {
                all.extend(assigned.elements().iter().map(|e| e.partition()));
            }
            all.sort_unstable();
            all.dedup();
            all
        };
        let behind = tokio::task::spawn_blocking(move || {
            let mut behind = 0i64;
            for partition in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&name, partition, WATERMARK_TIMEOUT)
                    .ok()?;
                let at = next.get(&partition).copied().unwrap_or(low).max(low);
                behind += (high - at).max(0);
            }
            Some(behind)
        })
        .await
        .ok()
        .flatten();
        let Some(behind) = behind else {
            continue;
        };
        metrics.lag_events.with_label_values(&[&origin]).set(behind);
        let seconds = match (behind, newest) {
            (0, _) | (_, None) => 0.0,
            (_, Some(at)) => (Utc::now() - at).num_milliseconds().max(0) as f64 / 1e3,
        };
        metrics
            .lag_seconds
            .with_label_values(&[&origin])
            .set(seconds);
    }
}
