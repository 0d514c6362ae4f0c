//! The Kafka producer of the relay and of dead letters: rdkafka's `BaseProducer` with a
//! delivery-report thread of ours, in place of rust-rdkafka's `FutureProducer`.
//!
//! Why: `FutureProducer` serves delivery reports from a thread that polls in 100 ms
//! windows, and `BaseProducer::poll` spins through the sub-millisecond tail of each
//! window (the remaining timeout rounds down to 0 ms), about 0.008 core per idle
//! producer, measured with `ledger-local cpu`: a third of an idle replicator. Ours
//! polls in 1 s windows. Reports are not delayed by the longer window: a poll serves
//! each report as it arrives and only returns at its deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::oneshot;

/// One poll of the delivery-report thread.
const POLL_WINDOW: Duration = Duration::from_secs(1);

/// Hands each delivery report to the sender stored with its record.
pub struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|(error, _)| error.clone());
        // The sender's owner may have given up waiting (a session that ended).
        let _ = reply.send(outcome);
    }
}

/// A record's acknowledgement by the broker, to be awaited.
#[derive(Debug)]
pub struct Delivery(oneshot::Receiver<Result<(), KafkaError>>);

impl Delivery {
    /// The broker's answer; `Canceled` if the producer went away without one.
    pub async fn acknowledged(self) -> Result<(), KafkaError> {
        self.0.await.unwrap_or(Err(KafkaError::Canceled))
    }
}

/// A producer whose delivery reports a thread of its own serves until it is dropped.
pub struct Producer {
    base: Arc<BaseProducer<Reports>>,
    stop: Arc<AtomicBool>,
}

impl Producer {
    pub fn new(config: &ClientConfig) -> Result<Producer, KafkaError> {
        let base: Arc<BaseProducer<Reports>> = Arc::new(config.create_with_context(Reports)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (base.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-delivery".into())
            .spawn(move || {
                // The thread keeps the producer alive until it stops, so records
                // already handed over are still acknowledged (or flushed on drop).
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL_WINDOW);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("start the delivery thread: {e}")))?;
        Ok(Producer { base, stop })
    }

    /// Queues one record; a full local queue is `MessageProduction(QueueFull)`, to be
    /// retried once the broker has acknowledged some.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivery, KafkaError> {
        let (reply, delivery) = oneshot::channel();
        let mut record: BaseRecord<'_, [u8], [u8], _> =
            BaseRecord::with_opaque_to(topic, Box::new(reply))
                .payload(payload)
                .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.base.send(record).map_err(|(error, _)| error)?;
        Ok(Delivery(delivery))
    }

    /// Waits until every queued record is acknowledged (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.base.flush(timeout)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
