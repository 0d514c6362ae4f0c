//! The node's one error type for starting and running (request errors are
//! `http::error::ApiError`, database calls' are `store::StoreError`), with `From`
//! conversions so the code that runs the node says `?` and not how to wrap.

use crate::{store, supervisor};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("database: {}", store::describe(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("schema migration failed: {0}")]
    Migration(#[from] ledger_schema::SchemaError),
    #[error("ownership service: {0}")]
    Ownership(String),
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Supervisor(#[from] supervisor::SupervisorError),
}
