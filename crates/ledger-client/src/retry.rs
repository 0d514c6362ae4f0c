//! What to do after an attempt: keep the answer, try the next region with the same
//! Idempotency-Key, or wait at the same region.
//!
//! The rules: 503 (`not-owner`, `home-unreachable`, `unavailable`), 502/504 from a
//! load balancer, timeouts and connection errors go to the next region: the request
//! either did nothing or is made exactly once by its key. 409 and 422 are the ledger's
//! answer and are never retried (nor is any other 4xx or a 500: retrying a bug does not
//! fix it). 429 means "slow down": wait its Retry-After at the same region (sending it
//! elsewhere would spread one client's overload over every region). Pure.

use std::time::Duration;

use rand::Rng;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The region answered with this status (and, on 429, this Retry-After).
    Answered {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer within the attempt's time.
    Timeout,
    /// No connection (refused, reset, DNS).
    Connect,
}

/// What the client does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer is the result (success or the ledger's refusal).
    Done,
    /// The region could not serve: count a failure against it, try the next one.
    NextRegion,
    /// Rate limited: wait this long, then the same region again.
    SameRegionAfter(Duration),
}

/// Retry-After when a 429 carries none.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

pub fn classify(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Timeout | Outcome::Connect => Verdict::NextRegion,
        Outcome::Answered {
            status: 429,
            retry_after,
        } => Verdict::SameRegionAfter(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
        Outcome::Answered {
            status: 502..=504, ..
        } => Verdict::NextRegion,
        Outcome::Answered { .. } => Verdict::Done,
    }
}

/// The total time a request may take and the pause between attempts.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Every attempt and pause of one request fit in this.
    pub budget: Duration,
    /// One attempt's limit (capped by what is left of the budget).
    pub attempt_timeout: Duration,
    /// First pause before another attempt; doubles each time up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            budget: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(500),
        }
    }
}

impl RetryConfig {
    /// The pause before retry number `retry` (0 = the first retry): "full jitter", a
    /// uniform draw up to the exponential step, so clients failing over together do not
    /// arrive together.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let step = self
            .base_backoff
            .saturating_mul(1_u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        step.mul_f64(rng.random_range(0.0..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Outcome {
        Outcome::Answered {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn unavailable_regions_and_lost_connections_go_to_the_next_region() {
        for outcome in [
            answered(503),
            answered(502),
            answered(504),
            Outcome::Timeout,
            Outcome::Connect,
        ] {
            assert_eq!(classify(&outcome), Verdict::NextRegion, "{outcome:?}");
        }
    }

    #[test]
    fn the_ledgers_answers_are_never_retried() {
        for status in [200, 201, 400, 401, 403, 404, 409, 422, 500] {
            assert_eq!(classify(&answered(status)), Verdict::Done, "{status}");
        }
    }

    #[test]
    fn rate_limits_wait_at_the_same_region() {
        let limited = Outcome::Answered {
            status: 429,
            retry_after: Some(Duration::from_millis(300)),
        };
        assert_eq!(
            classify(&limited),
            Verdict::SameRegionAfter(Duration::from_millis(300))
        );
        assert_eq!(
            classify(&answered(429)),
            Verdict::SameRegionAfter(DEFAULT_RETRY_AFTER)
        );
    }

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let config = RetryConfig::default();
        let mut rng = rand::rng();
        for retry in 0..40 {
            let pause = config.backoff(retry, &mut rng);
            let step = config.base_backoff.saturating_mul(1 << retry.min(16));
            assert!(pause <= step.min(config.max_backoff), "{retry}: {pause:?}");
        }
    }
}
