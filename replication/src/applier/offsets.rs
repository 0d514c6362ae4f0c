//! Positions in the origin's topic: the next offset each partition's batch leaves the
//! applier at, and the offsets a batch skipped.
//!
//! The relay's producer is idempotent and not transactional and nothing compacts the
//! events topics, so a partition's offsets are contiguous: a message past the applier's
//! next offset means the records between were deleted from the origin's broker (a
//! retention pass that outran the applier, or a broker that lost data). Tansu's fetch
//! returns the next records that exist rather than an out-of-range error, so without
//! this check such a hole would pass unseen; the applier reports it as an alarm
//! (metric and ERROR) instead.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rdkafka::message::{Message, OwnedMessage};

use super::Decoded;

/// Offsets `[from, to)` of `partition` that a batch went past without reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// The holes in `offsets` (partition, offset, in the order read) before each message,
/// given the next offset the applier expected per partition (absent: no expectation,
/// the partition is read from its beginning).
pub fn skipped(offsets: &[(i32, i64)], positions: &HashMap<i32, i64>) -> Vec<Skipped> {
    let mut expected = positions.clone();
    let mut holes = Vec::new();
    for (partition, offset) in offsets {
        if let Some(next) = expected.get(partition) {
            if offset > next {
                holes.push(Skipped {
                    partition: *partition,
                    from: *next,
                    to: *offset,
                });
            }
        }
        let next = expected.entry(*partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }
    holes
}

/// Per partition of the batch: the offset after its last message, and the time of its
/// newest decodable event.
pub fn next_offsets(
    batch: &[OwnedMessage],
    decoded: &[Decoded],
) -> HashMap<i32, (i64, Option<DateTime<Utc>>)> {
    let mut next: HashMap<i32, (i64, Option<DateTime<Utc>>)> = HashMap::new();
    for (message, decoded) in batch.iter().zip(decoded) {
        let time = decoded
            .as_ref()
            .ok()
            .and_then(|(input, _)| input["time"].as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let entry = next.entry(message.partition()).or_insert((0, None));
        entry.0 = entry.0.max(message.offset() + 1);
        entry.1 = entry.1.max(time);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_past_the_expected_offset_is_a_hole_and_rereads_are_not() {
        let positions: HashMap<i32, i64> = [(0, 10), (1, 3)].into_iter().collect();
        assert!(skipped(&[(0, 10), (0, 11), (1, 3)], &positions).is_empty());
        assert!(
            skipped(&[(0, 8), (0, 9), (0, 10)], &positions).is_empty(),
            "a replay of applied offsets is not a hole"
        );
        assert_eq!(
            skipped(&[(0, 10), (0, 14), (1, 7), (2, 50)], &positions),
            vec![
                Skipped {
                    partition: 0,
                    from: 11,
                    to: 14
                },
                Skipped {
                    partition: 1,
                    from: 3,
                    to: 7
                },
            ],
            "partition 2 has no expectation yet"
        );
        assert_eq!(
            skipped(&[(2, 50), (2, 52)], &positions),
            vec![Skipped {
                partition: 2,
                from: 51,
                to: 52
            }]
        );
    }
}
