//! How fast this node's clock runs against the ownership leader's, from the lease
//! grants: each grant carries the leader's time of granting, and the node notes its
//! own monotonic time on receipt. Over a sliding window (a minute), the ratio of the
//! two spans minus one is the rate drift the fencing delay assumes stays under
//! `--max-clock-drift` (ttl * (1 + drift) + margin): a node whose clock runs slower
//! than that believes its lease lasts longer than the survivors wait before they
//! write. Network jitter on one renewal moves the estimate by jitter / window (a few
//! ms over a minute: well under 0.1%).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples older than this are dropped.
pub const WINDOW: Duration = Duration::from_secs(60);
/// No estimate before the samples span this long.
pub const MIN_SPAN: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct DriftEstimator {
    /// (local monotonic time of receipt, leader's time of granting in ms)
    samples: VecDeque<(Instant, i64)>,
}

impl DriftEstimator {
    /// Records a grant received at `local`, stamped `leader_ms` by the leader; returns
    /// the drift over the window (negative: this clock runs slow), once it spans enough.
    pub fn observe(&mut self, local: Instant, leader_ms: i64) -> Option<f64> {
        if self
            .samples
            .back()
            .is_some_and(|&(at, ms)| local < at || leader_ms < ms)
        {
            // Time never runs backwards on either side; a reset leader starts anew.
            self.samples.clear();
        }
        self.samples.push_back((local, leader_ms));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|&(at, _)| local.duration_since(at) > WINDOW)
        {
            self.samples.pop_front();
        }
        let &(first_at, first_ms) = self.samples.front()?;
        let local_span = local.duration_since(first_at);
        let leader_span = leader_ms - first_ms;
        if local_span < MIN_SPAN || leader_span <= 0 {
            return None;
        }
        Some(local_span.as_secs_f64() / (leader_span as f64 / 1_000.0) - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every `step` of leader time, with this node's clock at `rate`.
    fn run(rate: f64, step: Duration, count: u32) -> Option<f64> {
        let mut estimator = DriftEstimator::default();
        let start = Instant::now();
        let mut last = None;
        for i in 0..count {
            let leader = step * i;
            let local = start + leader.mul_f64(rate);
            last = estimator.observe(local, 1_000_000 + leader.as_millis() as i64);
        }
        last
    }

    #[test]
    fn a_slow_clock_reads_negative_and_a_true_one_zero() {
        let slow = run(0.99, Duration::from_millis(500), 40).expect("an estimate");
        assert!((slow + 0.01).abs() < 1e-3, "{slow}");
        let fast = run(1.02, Duration::from_millis(500), 40).expect("an estimate");
        assert!((fast - 0.02).abs() < 1e-3, "{fast}");
        let true_clock = run(1.0, Duration::from_millis(500), 40).expect("an estimate");
        assert!(true_clock.abs() < 1e-3, "{true_clock}");
    }

    #[test]
    fn no_estimate_before_the_window_spans_enough() {
        assert_eq!(run(0.9, Duration::from_millis(500), 5), None);
    }

    #[test]
    fn the_window_slides_and_a_leader_clock_going_back_starts_over() {
        let mut estimator = DriftEstimator::default();
        let start = Instant::now();
        // Two minutes at rate 1.0, then a minute and a half at 0.95: the estimate only
        // holds the last minute.
        let mut local = start;
        let mut leader = 0i64;
        for _ in 0..240 {
            local += Duration::from_millis(500);
            leader += 500;
            estimator.observe(local, leader);
        }
        let mut last = None;
        for _ in 0..180 {
            local += Duration::from_millis(475);
            leader += 500;
            last = estimator.observe(local, leader);
        }
        let drift = last.expect("an estimate");
        assert!((drift + 0.05).abs() < 2e-3, "{drift}");
        assert_eq!(
            estimator.observe(local + Duration::from_secs(1), leader - 10),
            None
        );
    }
}
