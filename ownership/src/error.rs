//! The ownership crate's error type.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("storage at {path}: {message}")]
    Storage { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Supervisor(#[from] service_kit::SupervisorError),
}

impl OwnershipError {
    pub(crate) fn storage(path: &Path, error: impl std::fmt::Display) -> Self {
        OwnershipError::Storage {
            path: path.to_owned(),
            message: error.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| OwnershipError::Io { context, source }
    }
}
