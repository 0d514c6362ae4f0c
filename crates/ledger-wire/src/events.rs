//! The replication event envelope: what the relay publishes to a region's topic and what
//! every other region's applier reads.
//!
//! JSON, CloudEvents 1.0 structured mode (`content-type: application/cloudevents+json`),
//! so any Kafka client can read it. The ledger's own attributes are CloudEvents extension
//! attributes, whose names the spec limits to lower-case letters and digits:
//! `envelopeversion`, `seq`, `epoch`, `originregion`. `data` is the home's JSON of the
//! entry (or, for `AccountOpened`, of the account), exactly as the public API renders it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AccountId;

/// Version of this envelope's layout; a reader refuses versions it does not know.
pub const ENVELOPE_VERSION: u32 = 1;
/// CloudEvents version of the envelope.
pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";
/// Kafka `content-type` header of an envelope (CloudEvents structured mode).
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// Prefix of `type`: `ledger.Deposited` and so on.
pub const TYPE_PREFIX: &str = "ledger.";

/// Kafka header names the relay sets next to the envelope (the CloudEvents Kafka
/// binding's structured mode needs only `content-type`) and the appliers set on dead
/// letters.
pub mod headers {
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TRACEPARENT: &str = "traceparent";
    /// Set on dead-lettered messages: why the applier could not apply it.
    pub const DLQ_ERROR: &str = "ledger-dlq-error";
    pub const DLQ_TOPIC: &str = "ledger-dlq-topic";
    pub const DLQ_PARTITION: &str = "ledger-dlq-partition";
    pub const DLQ_OFFSET: &str = "ledger-dlq-offset";
    pub const DLQ_REGION: &str = "ledger-dlq-region";
}

/// The kinds of change an event describes (the outbox's `event_type`).
pub const EVENT_TYPES: [&str; 8] = [
    "AccountOpened",
    "Deposited",
    "Withdrawn",
    "TransferDebited",
    "TransferCredited",
    "TransferRejected",
    "TransferRefunded",
    "LateEventSettled",
];

/// Event types outside any account's sequence: they carry seq 0. `AccountOpened` starts
/// the sequence; `TransferRejected` is the destination home's decision in a cross-region
/// transfer, keyed by the source account so that it reaches the source's partition.
pub const UNSEQUENCED_TYPES: [&str; 3] = ["AccountOpened", "TransferRejected", "LateEventSettled"];

/// PostgreSQL channel on which appliers wake the region node's transfer saga worker.
pub const SAGA_NOTIFY_CHANNEL: &str = "ledger_saga";

/// PostgreSQL channel on which the region node wakes its relay after writes commit.
pub const OUTBOX_NOTIFY_CHANNEL: &str = "ledger_outbox";

/// Topic a region's relay publishes to, on that region's broker.
pub fn events_topic(region: &str) -> String {
    format!("ledger.events.{region}")
}

/// Dead-letter topic of the appliers running in `region`, on that region's broker.
pub fn dlq_topic(region: &str) -> String {
    format!("ledger.dlq.{region}")
}

/// `source` attribute of events written by `region`.
pub fn source_of(region: &str) -> String {
    format!("/ledger/regions/{region}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub specversion: String,
    /// Unique per event, chosen by the home when it wrote the change.
    pub id: Uuid,
    pub source: String,
    /// `ledger.<EventType>`, e.g. `ledger.Deposited`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the home committed the change (RFC 3339, UTC).
    pub time: String,
    /// The account, as its public id (`ac_…`).
    pub subject: String,
    pub datacontenttype: String,
    pub envelopeversion: u32,
    /// The account's sequence number after this change (0 for the unsequenced types).
    pub seq: i64,
    /// The ownership epoch the home wrote under.
    pub epoch: i64,
    /// The region that wrote the change.
    pub originregion: String,
    pub data: serde_json::Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not an event envelope: {0}")]
    Json(String),
    #[error("envelope version {0} is not known here (this reader knows {ENVELOPE_VERSION})")]
    Version(u32),
    #[error("unknown event type {0:?}")]
    EventType(String),
    #[error("subject {0:?} is not an account id")]
    Subject(String),
    #[error("{0}")]
    Invalid(&'static str),
}

impl EventEnvelope {
    /// Parses and checks an envelope read from a topic.
    pub fn decode(bytes: &[u8]) -> Result<EventEnvelope, EnvelopeError> {
        let envelope: EventEnvelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        envelope.validate()?;
        Ok(envelope)
    }

    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.envelopeversion != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(self.envelopeversion));
        }
        self.short_type()?;
        self.account()?;
        if self.seq < 0 || self.epoch < 0 {
            return Err(EnvelopeError::Invalid("seq and epoch must not be negative"));
        }
        if UNSEQUENCED_TYPES.contains(&self.short_type()?) != (self.seq == 0) {
            return Err(EnvelopeError::Invalid(
                "seq is 0 exactly for AccountOpened, TransferRejected and LateEventSettled events",
            ));
        }
        if self.originregion.is_empty() {
            return Err(EnvelopeError::Invalid("originregion is empty"));
        }
        Ok(())
    }

    /// The event type without its prefix (`Deposited`), as the outbox names it.
    pub fn short_type(&self) -> Result<&str, EnvelopeError> {
        self.event_type
            .strip_prefix(TYPE_PREFIX)
            .filter(|t| EVENT_TYPES.contains(t))
            .ok_or_else(|| EnvelopeError::EventType(self.event_type.clone()))
    }

    pub fn account(&self) -> Result<AccountId, EnvelopeError> {
        self.subject
            .parse()
            .map_err(|_| EnvelopeError::Subject(self.subject.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventEnvelope {
        EventEnvelope {
            specversion: CLOUDEVENTS_SPEC_VERSION.into(),
            id: Uuid::nil(),
            source: source_of("eu"),
            event_type: "ledger.Deposited".into(),
            time: "2026-01-01T00:00:00.000000Z".into(),
            subject: "ac_0001_00000000002a".into(),
            datacontenttype: "application/json".into(),
            envelopeversion: ENVELOPE_VERSION,
            seq: 3,
            epoch: 7,
            originregion: "eu".into(),
            data: serde_json::json!({"amount": "1.00"}),
        }
    }

    #[test]
    fn round_trips_and_names_the_type_attribute_as_cloudevents_does() {
        let bytes = serde_json::to_vec(&sample()).expect("encode");
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert!(text.contains(r#""type":"ledger.Deposited""#), "{text}");
        assert_eq!(EventEnvelope::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn refuses_what_it_cannot_apply() {
        type Spoil = fn(&mut EventEnvelope);
        let cases: [(Spoil, &str); 5] = [
            (|e| e.envelopeversion = 2, "version"),
            (|e| e.event_type = "ledger.Closed".into(), "event type"),
            (|e| e.subject = "acct-1".into(), "not an account id"),
            (|e| e.seq = 0, "seq is 0"),
            (|e| e.epoch = -1, "negative"),
        ];
        for (spoil, expected) in cases {
            let mut event = sample();
            spoil(&mut event);
            let bytes = serde_json::to_vec(&event).expect("encode");
            let error = EventEnvelope::decode(&bytes).expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
        }
        assert!(EventEnvelope::decode(b"not json").is_err());
    }
}
