//! Replication lag of one applier: events in the origin's topic not yet applied here,
//! and, while any wait, the age of the newest applied event.
//!
//! The origin's high watermarks come from librdkafka's own statistics (refreshed from
//! fetch responses every `STATS_INTERVAL`), not from extra ListOffsets requests: against
//! Tansu those queue behind fetches on the same connection and, under load, timed out
//! and stalled the broker's storage (see ARCHITECTURE.md, "Replication").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;

use crate::Metrics;

/// How often librdkafka reports statistics, and so how often lag gauges move.
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct State {
    /// Next offset to apply, per partition (absent: nothing applied yet).
    next: HashMap<i32, i64>,
    /// Last stable offset per partition, from the latest statistics.
    stable: HashMap<i32, i64>,
    newest_applied: Option<DateTime<Utc>>,
}

/// Where the applier is and what the origin holds, shared between the applier and its
/// consumer's statistics callback, which publishes the gauges.
#[derive(Debug, Clone)]
pub struct LagTracker {
    state: Arc<Mutex<State>>,
    topic: String,
    origin: String,
    metrics: Metrics,
}

impl LagTracker {
    pub fn new(topic: &str, origin: &str, metrics: Metrics) -> LagTracker {
        LagTracker {
            state: Arc::default(),
            topic: topic.to_owned(),
            origin: origin.to_owned(),
            metrics,
        }
    }

    /// Positions read from the database at the start of a session.
    pub fn start_at(&self, stored: &HashMap<i32, i64>) {
        if let Ok(mut state) = self.state.lock() {
            state.next.clone_from(stored);
        }
    }

    pub fn advance(
        &self,
        next: &HashMap<i32, (i64, Option<DateTime<Utc>>)>,
        newest: Option<DateTime<Utc>>,
    ) {
        if let Ok(mut state) = self.state.lock() {
            for (partition, (offset, _)) in next {
                state.next.insert(*partition, *offset);
            }
            state.newest_applied = state.newest_applied.max(newest);
        }
    }

    /// The next offset to apply, per partition applied from so far.
    pub fn positions(&self) -> HashMap<i32, i64> {
        self.state
            .lock()
            .map(|state| state.next.clone())
            .unwrap_or_default()
    }

    /// Ends read from the origin while the applier idles (no fetches, so no statistics
    /// move): they stand in for the last stable offsets. Returns how many events the
    /// origin holds past this applier's positions.
    pub fn observe_ends(&self, ends: &HashMap<i32, i64>) -> i64 {
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        for (partition, end) in ends {
            raise(&mut state.stable, *partition, *end);
        }
        events_behind(&state.stable, &state.next)
    }

    fn publish(&self, statistics: &Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for (partition, stats) in &topic.partitions {
            // Partition -1 is librdkafka's internal "unassigned" queue.
            // The larger of the two: a paused partition's statistics stand still while
            // the idle applier's reads of the ends move on.
            if *partition >= 0 && stats.ls_offset >= 0 {
                raise(&mut state.stable, *partition, stats.ls_offset);
            }
        }
        let behind = events_behind(&state.stable, &state.next);
        self.metrics
            .lag_events
            .with_label_values(&[&self.origin])
            .set(behind);
        let seconds = match (behind, state.newest_applied) {
            (0, _) | (_, None) => 0.0,
            (_, Some(at)) => (Utc::now() - at).num_milliseconds().max(0) as f64 / 1e3,
        };
        self.metrics
            .lag_seconds
            .with_label_values(&[&self.origin])
            .set(seconds);
    }
}

/// Raises a partition's known end to `end` (ends only grow).
fn raise(ends: &mut HashMap<i32, i64>, partition: i32, end: i64) {
    let known = ends.entry(partition).or_insert(0);
    *known = (*known).max(end);
}

/// Events the origin holds past the applier: per partition its end minus the next
/// offset to apply (absent: nothing applied yet, so every event is unread).
pub fn events_behind(ends: &HashMap<i32, i64>, next: &HashMap<i32, i64>) -> i64 {
    ends.iter()
        .map(|(partition, end)| (end - next.get(partition).copied().unwrap_or(0)).max(0))
        .sum()
}

/// The applier consumer's context: statistics feed the lag gauges.
pub struct LagContext(pub LagTracker);

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        self.0.publish(&statistics);
    }
}

impl ConsumerContext for LagContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_means_an_end_past_the_applier_s_position() {
        let at = |pairs: &[(i32, i64)]| pairs.iter().copied().collect::<HashMap<_, _>>();
        assert!(events_behind(&at(&[(0, 5), (1, 0)]), &at(&[(0, 5)])) == 0);
        assert!(events_behind(&at(&[(0, 6), (1, 0)]), &at(&[(0, 5)])) > 0);
        assert!(
            events_behind(&at(&[(0, 5), (1, 1)]), &at(&[(0, 5)])) > 0,
            "a partition never applied from holds one unread event"
        );
        assert!(events_behind(&at(&[]), &at(&[(0, 5)])) == 0);
    }
}
