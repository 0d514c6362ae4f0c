//! Kafka clients (rdkafka) with the settings replication relies on, and topic creation.
//!
//! Every client also takes the librdkafka properties given as `LEDGER_KAFKA_<PROPERTY>`
//! environment variables (the property's dots as underscores): what a managed broker
//! needs (TLS, SASL/SCRAM, a CA file) without a flag per property.
//! `LEDGER_KAFKA_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`. An unknown
//! property stops the client from being made, with librdkafka's error naming it.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::producer::Producer;
use crate::ReplicationError;

/// Prefix of the environment variables that carry librdkafka properties.
pub const PROPERTY_PREFIX: &str = "LEDGER_KAFKA_";

/// `(property, value)` for each `LEDGER_KAFKA_<PROPERTY>` among `vars`.
pub fn properties_from(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> = vars
        .filter_map(|(name, value)| {
            let property = name.strip_prefix(PROPERTY_PREFIX)?;
            (!property.is_empty()).then(|| (property.to_lowercase().replace('_', "."), value))
        })
        .collect();
    properties.sort();
    properties
}

/// A client configuration for `brokers` with this process's `LEDGER_KAFKA_*` properties.
pub fn client_config(brokers: &str) -> ClientConfig {
    static PROPERTIES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let properties = PROPERTIES.get_or_init(|| properties_from(std::env::vars()));
    with_properties(brokers, properties)
}

fn with_properties(brokers: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (property, value) in properties {
        config.set(property, value);
    }
    config
}

/// An idempotent producer: the broker drops retried duplicates and keeps each
/// partition's order, `acks=all` is implied. Keys are hashed the way the Java client
/// does (murmur2), so any standard client finds an account's partition.
pub fn producer(
    brokers: &str,
    client_id: &str,
    linger_ms: u64,
) -> Result<Producer, ReplicationError> {
    let mut config = client_config(brokers);
    config
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
    let mut config = client_config(brokers);
    config
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
    let admin: AdminClient<DefaultClientContext> = client_config(brokers)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseProducer;

    #[test]
    fn ledger_kafka_variables_become_librdkafka_properties() {
        let vars = [
            ("LEDGER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("LEDGER_KAFKA_SASL_USERNAME", "ledger"),
            ("LEDGER_KAFKA_", "ignored"),
            ("LEDGER_BROKERS", "not a property"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(
            properties_from(vars.into_iter()),
            vec![
                ("sasl.username".to_owned(), "ledger".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
            ]
        );
    }

    #[test]
    fn tls_with_scram_is_accepted_and_an_unknown_property_is_named() {
        let managed = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "ledger"),
            ("sasl.password", "secret"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        // Made without contacting a broker: librdkafka checks the properties (and that
        // it was built with TLS) when the client is created.
        let made: Result<BaseProducer, _> = with_properties("127.0.0.1:1", &managed).create();
        assert!(made.is_ok(), "{:?}", made.err());
        let unknown = [("no.such.property".to_owned(), "1".to_owned())];
        let refused: Result<BaseProducer, _> = with_properties("127.0.0.1:1", &unknown).create();
        let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("no.such.property"), "{error}");
    }
}
