//! Which region a request goes to: the nearest healthy one by measured latency.
//!
//! Each region keeps an exponentially weighted moving average of the latencies of its
//! answers (the idea of tower's PeakEwma, without the peak: a region that slows down is
//! caught by its own slow answers and, when it stops answering, by its breaker) and a
//! circuit breaker: `failures_to_open` consecutive failures open it for `open_for`;
//! then one request may probe it (half-open): a success closes it, a failure opens it
//! again. Pure: the caller passes the time, so the tests drive it without sleeping.

use std::time::{Duration, Instant};

/// Knobs of the routing and the breakers.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Weight of the newest latency in the average (0..=1).
    pub ewma_weight: f64,
    /// Consecutive failures that open a region's breaker.
    pub failures_to_open: u32,
    /// How long an open breaker keeps requests away before one probe is let through.
    pub open_for: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            ewma_weight: 0.3,
            failures_to_open: 3,
            open_for: Duration::from_secs(2),
        }
    }
}

/// A region's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Requests go there; `failures` in a row so far.
    Closed { failures: u32 },
    /// No requests until `until` (unless every region is open).
    Open { until: Instant },
    /// One probe is out or may go; its outcome closes or reopens the breaker.
    HalfOpen,
}

/// What the router knows of one region.
#[derive(Debug, Clone)]
pub struct RegionState {
    pub name: String,
    pub url: String,
    /// Average answer latency in ms; `None` until the first answer.
    pub ewma_ms: Option<f64>,
    pub breaker: Breaker,
}

/// The regions of a deployment and their health.
#[derive(Debug, Clone)]
pub struct Router {
    config: RoutingConfig,
    regions: Vec<RegionState>,
}

impl Router {
    /// `regions`: (name, base URL) pairs, every breaker closed, no latency known.
    pub fn new(config: RoutingConfig, regions: Vec<(String, String)>) -> Router {
        let regions = regions
            .into_iter()
            .map(|(name, url)| RegionState {
                name,
                url,
                ewma_ms: None,
                breaker: Breaker::Closed { failures: 0 },
            })
            .collect();
        Router { config, regions }
    }

    pub fn regions(&self) -> &[RegionState] {
        &self.regions
    }

    /// Region indices in the order to try them at `now`: closed breakers by average
    /// latency (an unknown latency first, so that every region gets measured by the
    /// first requests and the nearest one wins from then on), then half-open ones (an open breaker whose time is up
    /// becomes half-open here), then still-open ones, soonest to reopen first. An open
    /// region is thus never chosen while a closed one exists.
    pub fn order(&mut self, now: Instant) -> Vec<usize> {
        for region in &mut self.regions {
            if let Breaker::Open { until } = region.breaker {
                if now >= until {
                    region.breaker = Breaker::HalfOpen;
                }
            }
        }
        let mut order: Vec<usize> = (0..self.regions.len()).collect();
        order.sort_by(|&a, &b| {
            let rank = |i: usize| -> (u8, f64) {
                let region = &self.regions[i];
                match region.breaker {
                    Breaker::Closed { .. } => (0, region.ewma_ms.unwrap_or(0.0)),
                    Breaker::HalfOpen => (1, region.ewma_ms.unwrap_or(0.0)),
                    Breaker::Open { until } => {
                        (2, until.saturating_duration_since(now).as_secs_f64())
                    }
                }
            };
            let (ra, rb) = (rank(a), rank(b));
            ra.0.cmp(&rb.0).then(ra.1.total_cmp(&rb.1))
        });
        order
    }

    /// The index of region `name` if its breaker is closed.
    pub fn closed_index(&self, name: &str) -> Option<usize> {
        self.regions
            .iter()
            .position(|r| r.name == name && matches!(r.breaker, Breaker::Closed { .. }))
    }

    /// Region `index` answered (any status that says it is healthy) after `latency`.
    pub fn success(&mut self, index: usize, latency: Duration) {
        let weight = self.config.ewma_weight;
        let Some(region) = self.regions.get_mut(index) else {
            return;
        };
        let ms = latency.as_secs_f64() * 1e3;
        region.ewma_ms = Some(match region.ewma_ms {
            Some(average) => average + weight * (ms - average),
            None => ms,
        });
        region.breaker = Breaker::Closed { failures: 0 };
    }

    /// Region `index` failed a request at `now` (no answer, or an answer that says it
    /// cannot serve).
    pub fn failure(&mut self, index: usize, now: Instant) {
        let (limit, open_for) = (self.config.failures_to_open, self.config.open_for);
        let Some(region) = self.regions.get_mut(index) else {
            return;
        };
        region.breaker = match region.breaker {
            Breaker::Closed { failures } if failures + 1 < limit => Breaker::Closed {
                failures: failures + 1,
            },
            _ => Breaker::Open {
                until: now + open_for,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(
            RoutingConfig::default(),
            ["eu", "us", "ap"]
                .iter()
                .map(|n| (n.to_string(), format!("http://{n}")))
                .collect(),
        )
    }

    #[test]
    fn the_nearest_region_by_measured_latency_goes_first() {
        let mut router = router();
        let now = Instant::now();
        router.success(0, Duration::from_millis(80));
        router.success(1, Duration::from_millis(5));
        router.success(2, Duration::from_millis(190));
        assert_eq!(router.order(now), vec![1, 0, 2]);
        // us slows down: its average follows and eu becomes nearer.
        for _ in 0..10 {
            router.success(1, Duration::from_millis(150));
        }
        assert_eq!(router.order(now), vec![0, 1, 2]);
    }

    #[test]
    fn regions_without_a_measurement_are_measured_first() {
        let mut router = router();
        router.success(0, Duration::from_millis(5));
        router.success(2, Duration::from_millis(190));
        assert_eq!(router.order(Instant::now()), vec![1, 0, 2]);
    }

    #[test]
    fn consecutive_failures_open_the_breaker_and_a_success_resets_the_count() {
        let mut router = router();
        let now = Instant::now();
        router.failure(0, now);
        router.failure(0, now);
        router.success(0, Duration::from_millis(1));
        router.failure(0, now);
        router.failure(0, now);
        assert_eq!(router.regions()[0].breaker, Breaker::Closed { failures: 2 });
        router.failure(0, now);
        assert!(matches!(router.regions()[0].breaker, Breaker::Open { .. }));
    }

    #[test]
    fn an_open_region_is_never_chosen_while_a_closed_one_exists() {
        let mut router = router();
        let now = Instant::now();
        router.success(0, Duration::from_millis(1));
        router.success(1, Duration::from_millis(500));
        router.success(2, Duration::from_millis(900));
        for _ in 0..3 {
            router.failure(0, now);
        }
        let order = router.order(now + Duration::from_millis(100));
        assert_eq!(
            order.last(),
            Some(&0),
            "the open region goes last: {order:?}"
        );
        assert_eq!(order[0], 1);
    }

    #[test]
    fn an_open_breaker_half_opens_after_its_time_then_a_probe_decides() {
        let mut router = router();
        let now = Instant::now();
        router.success(0, Duration::from_millis(1));
        router.success(1, Duration::from_millis(50));
        router.success(2, Duration::from_millis(90));
        for _ in 0..3 {
            router.failure(0, now);
        }
        let later = now + RoutingConfig::default().open_for;
        let order = router.order(later);
        assert_eq!(router.regions()[0].breaker, Breaker::HalfOpen);
        assert_eq!(order, vec![1, 2, 0], "half-open after the closed ones");
        // A failed probe opens it again at once (no three strikes).
        router.failure(0, later);
        assert!(matches!(router.regions()[0].breaker, Breaker::Open { .. }));
        let again = later + RoutingConfig::default().open_for;
        router.order(again);
        router.success(0, Duration::from_millis(1));
        assert_eq!(router.regions()[0].breaker, Breaker::Closed { failures: 0 });
        assert_eq!(router.order(again)[0], 0);
    }

    #[test]
    fn when_every_region_is_open_the_one_reopening_soonest_is_tried_first() {
        let mut router = router();
        let now = Instant::now();
        for (i, offset) in [(0, 300), (1, 100), (2, 200)] {
            for _ in 0..3 {
                router.failure(i, now + Duration::from_millis(offset));
            }
        }
        assert_eq!(
            router.order(now + Duration::from_millis(400)),
            vec![1, 2, 0]
        );
    }
}
