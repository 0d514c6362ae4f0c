//! The replication crate's one error type.

use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("region database: {0}")]
    Schema(#[from] ledger_schema::SchemaError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("dead letters: {0}")]
    DeadLetters(String),
    #[error("the relay's database session ended, so it no longer holds the relay lock")]
    LockLost,
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Supervisor(#[from] service_kit::supervisor::SupervisorError),
}
