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

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Whether the applier fetches now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Partitions assigned; go idle if no message arrives before the deadline.
    Fetching { until: Instant },
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
        Pacing {
            idle_after,
            idle_poll,
            pace: Pace::Fetching {
                until: now + idle_after,
            },
        }
    }

    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// Never goes idle.
    pub fn always_fetching(&self) -> bool {
        self.idle_after.is_zero()
    }

    /// A message arrived: keep fetching for `idle_after` more.
    pub fn message(&mut self, now: Instant) {
        self.pace = Pace::Fetching {
            until: now + self.idle_after,
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

/// Whether the origin holds events past where the applier stands: `ends` are the
/// partitions' next offsets at the origin (ListOffsets "latest"), `next` the applier's
/// next offset per partition (absent: nothing applied yet, so any event is unread).
pub fn has_unread(ends: &HashMap<i32, i64>, next: &HashMap<i32, i64>) -> bool {
    ends.iter()
        .any(|(partition, end)| *end > next.get(partition).copied().unwrap_or(0))
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
                until: start + 2 * second
            }
        );
        pacing.message(start + second);
        assert_eq!(
            pacing.pace(),
            Pace::Fetching {
                until: start + 3 * second
            }
        );
        pacing.went_idle();
        assert_eq!(pacing.pace(), Pace::Idle);
        pacing.woke(start + 5 * second);
        assert_eq!(
            pacing.pace(),
            Pace::Fetching {
                until: start + 7 * second
            }
        );
        assert!(!pacing.always_fetching());
        assert!(Pacing::new(Duration::ZERO, second, start).always_fetching());
    }

    #[test]
    fn unread_means_an_end_past_the_applier_s_position() {
        let at = |pairs: &[(i32, i64)]| pairs.iter().copied().collect::<HashMap<_, _>>();
        assert!(!has_unread(&at(&[(0, 5), (1, 0)]), &at(&[(0, 5)])));
        assert!(has_unread(&at(&[(0, 6), (1, 0)]), &at(&[(0, 5)])));
        assert!(
            has_unread(&at(&[(0, 5), (1, 1)]), &at(&[(0, 5)])),
            "a partition never applied from holds one unread event"
        );
        assert!(!has_unread(&at(&[]), &at(&[(0, 5)])));
    }
}
