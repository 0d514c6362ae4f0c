//! The dead-letter topic: events an applier could not apply, kept with the reason.
//!
//! Each region's appliers write to `ledger.dlq.<region>` on the region's own broker: the
//! original key, payload and headers, plus headers naming the error and where the event
//! was read. Delivery is awaited before the applier's transaction commits, so an event
//! is never both skipped and missing from the DLQ (a crash in between may dead-letter it
//! twice).

use ledger_wire::events::{self, headers};
use rdkafka::message::{Headers, Message, OwnedHeaders, OwnedMessage};

use crate::envelope::header;
use crate::producer::Producer;
use crate::ReplicationError;

#[derive(Debug, Clone)]
pub struct DeadLetter {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    /// A message as read, with `error`.
    pub fn of_message(message: &OwnedMessage, error: &str) -> DeadLetter {
        let mut kept: Vec<(String, Vec<u8>)> = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        kept.push((headers::DLQ_ERROR.into(), error.as_bytes().to_vec()));
        kept.push((
            headers::DLQ_TOPIC.into(),
            message.topic().as_bytes().to_vec(),
        ));
        kept.push((
            headers::DLQ_PARTITION.into(),
            message.partition().to_string().into_bytes(),
        ));
        kept.push((
            headers::DLQ_OFFSET.into(),
            message.offset().to_string().into_bytes(),
        ));
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            %error,
            "dead-lettering an event"
        );
        DeadLetter {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers: kept,
        }
    }

    /// An envelope that had waited for a gap and then could not be applied.
    pub fn of_released(envelope: &serde_json::Value, error: &str) -> DeadLetter {
        tracing::warn!(%error, "dead-lettering an event released from waiting");
        DeadLetter {
            key: envelope["subject"].as_str().map(|s| s.as_bytes().to_vec()),
            payload: serde_json::to_vec(envelope).unwrap_or_default(),
            headers: vec![(headers::DLQ_ERROR.into(), error.as_bytes().to_vec())],
        }
    }
}

/// Sends `letters` to `region`'s dead-letter topic and waits until all are stored.
pub async fn send(
    producer: &Producer,
    region: &str,
    letters: &[DeadLetter],
) -> Result<(), ReplicationError> {
    let topic = events::dlq_topic(region);
    let mut deliveries = Vec::with_capacity(letters.len());
    for letter in letters {
        let mut owned = OwnedHeaders::new_with_capacity(letter.headers.len() + 1)
            .insert(header(headers::DLQ_REGION, region));
        for (key, value) in &letter.headers {
            owned = owned.insert(rdkafka::message::Header {
                key: key.as_str(),
                value: Some(value.as_slice()),
            });
        }
        deliveries.push(
            producer
                .send(&topic, letter.key.as_deref(), &letter.payload, owned)
                .map_err(ReplicationError::Kafka)?,
        );
    }
    for delivery in deliveries {
        delivery
            .acknowledged()
            .await
            .map_err(ReplicationError::Kafka)?;
    }
    Ok(())
}
