//! Kafka clients (rdkafka) with the settings replication relies on, and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::producer::Producer;
use crate::ReplicationError;

/// An idempotent producer: the broker drops retried duplicates and keeps each
/// partition's order, `acks=all` is implied. Keys are hashed the way the Java client
/// does (murmur2), so any standard client finds an account's partition.
pub fn producer(
    brokers: &str,
    client_id: &str,
    linger_ms: u64,
) -> Result<Producer, ReplicationError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms.to_string())
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "200000")
        .set("reconnect.backoff.max.ms", "1000");
    Producer::new(&config).map_err(ReplicationError::Kafka)
}

/// A consumer that is given its partitions and offsets (`assign`), never commits on its
/// own, and reads only committed data. The group id is used only to publish positions
/// for standard lag tooling; the applier's own positions live in its database.
pub fn consumer(brokers: &str, group_id: &str) -> Result<StreamConsumer, ReplicationError> {
    consumer_config(brokers, group_id)
        .create()
        .map_err(ReplicationError::Kafka)
}

/// [`consumer`] with a context of the caller's (the applier's lag statistics).
pub fn consumer_with<C: ConsumerContext + 'static>(
    brokers: &str,
    group_id: &str,
    context: C,
) -> Result<StreamConsumer<C>, ReplicationError> {
    consumer_config(brokers, group_id)
        .set(
            "statistics.interval.ms",
            crate::lag::STATS_INTERVAL.as_millis().to_string(),
        )
        .create_with_context(context)
        .map_err(ReplicationError::Kafka)
}

fn consumer_config(brokers: &str, group_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("reconnect.backoff.max.ms", "1000");
    config
}

/// Creates `topics` on `brokers` with `partitions` each; topics that exist are left
/// as they are.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[String],
    partitions: i32,
) -> Result<(), ReplicationError> {
    ensure_topics_with(brokers, topics, partitions, &[]).await
}

/// [`ensure_topics`], creating missing topics with `configs` (e.g. retention); topics
/// that exist keep the configuration they have.
pub async fn ensure_topics_with(
    brokers: &str,
    topics: &[String],
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), ReplicationError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(ReplicationError::Kafka)?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| {
            configs.iter().fold(
                NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&new_topics, &options).await?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::warn!(topic = %name, %code, "could not create topic");
                return Err(ReplicationError::Kafka(KafkaError::AdminOp(code)));
            }
        }
    }
    Ok(())
}
