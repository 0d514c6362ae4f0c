//! When an applier fetches: continuously while events flow, and only now and then
//! while its origin is quiet.
//!
//! Tansu 0.6 answers every fetch after `fetch.wait.max.ms` whether or not it found data
//! (it sleeps out the rest of the wait even with records in hand), so librdkafka's
//! fetch loop is a poll: at the 10 ms the applier needs for low lag, each of a
//! three-region deployment's six appliers asks its origin's broker about every partition
//! 100 times a second, and the brokers burned about one core of an idle 2-core machine
//! answering. So an applier that has seen nothing for `idle_after` gives up its
//! partitions (librdkafka then fetches nothing) and every `idle_poll` asks the broker for
//! the partitions' ends in one ListOffsets request; only when an end lies past where the
//! applier stands does it take its partitions again, at its applied positions. Under
//! load nothing changes: a message keeps it fetching. A quiet origin's first event waits
//! at most `idle_poll` longer.
//!
//! Giving up and retaking the partitions loses nothing and replays nothing: the applier
//! goes idle only between batches, when every message handed to it has been applied, and
//! it is assigned again at exactly the positions those batches stored.

use std::time::{Duration, Instant};

/// Whether the applier fetches now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Partitions assigned; go idle if no message arrives before the deadline (none:
    /// never idle).
    Fetching { until: Option<Instant> },
    /// Partitions given up; look at the origin's ends every `idle_poll`.
    Idle,
}

/// The applier's fetch pacing (pure: the applier gives up and retakes its partitions
/// and asks the broker).
#[derive(Debug, Clone)]
pub struct Pacing {
    idle_after: Duration,
    pub idle_poll: Duration,
    pace: Pace,
}

impl Pacing {
    /// Starts fetching. `idle_after` zero: never idle (always fetching).
    pub fn new(idle_after: Duration, idle_poll: Duration, now: Instant) -> Pacing {
        let mut pacing = Pacing {
            idle_after,
            idle_poll,
            pace: Pace::Idle,
        };
        pacing.message(now);
        pacing
    }

    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// A message arrived: keep fetching for `idle_after` more.
    pub fn message(&mut self, now: Instant) {
        self.pace = Pace::Fetching {
            until: (!self.idle_after.is_zero()).then(|| now + self.idle_after),
        };
    }

    /// The partitions were given up.
    pub fn went_idle(&mut self) {
        self.pace = Pace::Idle;
    }

    /// The partitions were taken again (events are waiting, or the origin's ends could not
    /// be read and fetching is the safe way to find out).
    pub fn woke(&mut self, now: Instant) {
        self.message(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_keeps_it_fetching_and_only_silence_lets_it_idle() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut pacing = Pacing::new(2 * second, Duration::from_millis(100), start);
        assert_eq!(
            pacing.pace(),
            Pace::Fetching {
                until: Some(start + 2 * second)
            }
        );
        pacing.message(start + second);
        assert_eq!(
            pacing.pace(),
            Pace::Fetching {
                until: Some(start + 3 * second)
            }
        );
        pacing.went_idle();
        assert_eq!(pacing.pace(), Pace::Idle);
        pacing.woke(start + 5 * second);
        assert_eq!(
            pacing.pace(),
            Pace::Fetching {
                until: Some(start + 7 * second)
            }
        );
        assert_eq!(
            Pacing::new(Duration::ZERO, second, start).pace(),
            Pace::Fetching { until: None },
            "idle after zero: always fetching"
        );
    }
}
