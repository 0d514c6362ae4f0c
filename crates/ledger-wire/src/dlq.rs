//! The dead-letter contract between a region's replicator (which keeps the letters in
//! its region's `ledger.dlq.<region>` topic and replays them) and the failover tool
//! (`failover dlq list|show|replay`): routes under the internal prefix, signed like
//! every internal call, and their bodies.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `GET` -> [`DeadLetters`]: every letter of the region's DLQ topic, with its replay.
pub const LIST: &str = "/v1/dlq";
/// `GET /v1/dlq/{partition}:{offset}` -> [`DeadLetterDetail`].
pub fn show(letter: LetterId) -> String {
    format!("/v1/dlq/{letter}")
}
/// The route [`show`] fills in.
pub const SHOW_ROUTE: &str = "/v1/dlq/{letter}";
/// `POST` [`ReplayRequest`] -> [`ReplayReport`].
pub const REPLAY: &str = "/v1/dlq/replay";

/// Where a letter is in the DLQ topic: `partition:offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LetterId {
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for LetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

impl FromStr for LetterId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a letter id (partition:offset, e.g. 0:12)");
        let (partition, offset) = text.split_once(':').ok_or_else(bad)?;
        let partition: i32 = partition.parse().map_err(|_| bad())?;
        let offset: i64 = offset.parse().map_err(|_| bad())?;
        if partition < 0 || offset < 0 {
            return Err(bad());
        }
        Ok(LetterId { partition, offset })
    }
}

/// The last replay of a letter (`ledger.dlq_replays`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The apply rules' outcome: `applied`, `superseded`, `duplicate`, `pending`, `late`
    /// settle the letter; `poison` leaves it waiting for another fix.
    pub outcome: String,
    pub detail: Option<String>,
    pub by: String,
    pub at: DateTime<Utc>,
    pub attempts: i32,
}

impl Replay {
    /// Whether the letter needs nothing more: the event went through the apply rules.
    pub fn settled(&self) -> bool {
        self.outcome != "poison"
    }
}

/// One letter as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: LetterId,
    /// When the letter was written (the broker's timestamp).
    pub at: Option<DateTime<Utc>>,
    /// Why the applier could not apply it.
    pub error: String,
    /// Where the event was read: `topic[partition]@offset`, when it came from a topic.
    pub source: Option<String>,
    /// The event's id, type, account and origin, when the payload is a readable envelope.
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub account: Option<String>,
    pub origin: Option<String>,
    pub replay: Option<Replay>,
}

impl DeadLetter {
    pub fn waiting(&self) -> bool {
        !self.replay.as_ref().is_some_and(Replay::settled)
    }
}

/// A region's dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetters {
    pub region: String,
    pub letters: Vec<DeadLetter>,
}

impl DeadLetters {
    pub fn waiting(&self) -> usize {
        self.letters.iter().filter(|l| l.waiting()).count()
    }

    /// The oldest letter still waiting.
    pub fn oldest_waiting(&self) -> Option<DateTime<Utc>> {
        self.letters
            .iter()
            .filter(|l| l.waiting())
            .filter_map(|l| l.at)
            .min()
    }
}

/// One letter whole: every header and the payload as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterDetail {
    pub letter: DeadLetter,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The payload as text (lossy where it is not UTF-8).
    pub payload: String,
}

/// Replay letters through the normal apply rules: `letters`, or every waiting one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// Empty: every letter still waiting.
    #[serde(default)]
    pub letters: Vec<LetterId>,
    /// Who asks (recorded with each replay).
    pub by: String,
}

/// What one letter's replay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayResult {
    pub id: LetterId,
    pub event_id: Option<Uuid>,
    /// The apply rules' outcome, `unreadable` (the payload is no event this version can
    /// read), or `already` (an earlier replay settled it; nothing done).
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub region: String,
    pub results: Vec<ReplayResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letter_ids_read_back_what_they_print() {
        let id = LetterId {
            partition: 2,
            offset: 41,
        };
        assert_eq!(id.to_string().parse(), Ok(id));
        for bad in ["", "3", "a:1", "1:b", "-1:0", "0:-4", "1:2:3"] {
            assert!(bad.parse::<LetterId>().is_err(), "{bad}");
        }
    }
}
