//! The durable Raft log and vote, in a redb database in the voter's data dir.
//!
//! Why redb: it is pure Rust (no C++ build like RocksDB, which would cost CI many
//! minutes on two cores), maintained, and its commits are atomic and crash-safe
//! (copy-on-write pages, checksummed two-slot commit header). With the default
//! `Durability::Immediate` a commit returns only after fsync, which is exactly what
//! Raft needs: a vote and appended entries are on disk before we acknowledge them,
//! so a voter killed with SIGKILL never votes twice in a term and never forgets an
//! entry it acknowledged. sled was the other embedded candidate; it is unmaintained
//! and its own docs call its on-disk format unstable.
//!
//! The committed index is written with `Durability::None`: losing it in a crash is
//! harmless (it only tells a restarted voter how much of its own log it may re-apply
//! before hearing from a leader), and it is saved on every commit, so an fsync there
//! would double the cost of each write.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::OwnershipError;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The latest committed index saved, for the metrics (`u64::MAX` = none yet).
    committed: Arc<AtomicU64>,
}

impl LogStore {
    pub fn open(dir: &Path) -> Result<Self, OwnershipError> {
        let path = dir.join("raft-log.redb");
        let db = Database::create(&path).map_err(|e| OwnershipError::storage(&path, e))?;
        let txn = db
            .begin_write()
            .map_err(|e| OwnershipError::storage(&path, e))?;
        txn.open_table(LOGS)
            .map_err(|e| OwnershipError::storage(&path, e))?;
        txn.open_table(META)
            .map_err(|e| OwnershipError::storage(&path, e))?;
        txn.commit()
            .map_err(|e| OwnershipError::storage(&path, e))?;
        let store = LogStore {
            db: Arc::new(db),
            committed: Arc::new(AtomicU64::new(u64::MAX)),
        };
        if let Ok(Some(committed)) = store.read_meta::<LogId>(KEY_COMMITTED) {
            store.committed.store(committed.index, Ordering::Relaxed);
        }
        Ok(store)
    }

    /// The latest committed log index this voter knows of.
    pub fn committed_index(&self) -> Option<u64> {
        let value = self.committed.load(Ordering::Relaxed);
        (value != u64::MAX).then_some(value)
    }

    // The error type is openraft's, which its storage traits require.
    #[allow(clippy::result_large_err)]
    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let read = |e: AnyError| StorageError::IO {
            source: StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, e),
        };
        let txn = self.db.begin_read().map_err(|e| read(AnyError::new(&e)))?;
        let table = txn.open_table(META).map_err(|e| read(AnyError::new(&e)))?;
        let Some(value) = table.get(key).map_err(|e| read(AnyError::new(&e)))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| read(AnyError::new(&e)))
    }

    /// Runs a write transaction on a blocking thread (commits fsync).
    async fn write<F>(
        &self,
        durability: Durability,
        subject: ErrorSubject<NodeId>,
        f: F,
    ) -> Result<(), StorageError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            f(&txn)?;
            txn.commit()?;
            Ok(())
        })
        .await;
        let error: AnyError = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => AnyError::new(&e),
            Err(join) => AnyError::new(&join),
        };
        Err(StorageError::IO {
            source: StorageIOError::new(subject, ErrorVerb::Write, error),
        })
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageError::IO {
            source: StorageIOError::write(&e),
        })?;
        self.write(durability, ErrorSubject::Store, move |txn| {
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
        .await
    }
}

fn to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let db = self.db.clone();
        let bounds = to_bounds(&range);
        let read = tokio::task::spawn_blocking(move || -> Result<Vec<Entry>, AnyError> {
            let txn = db.begin_read().map_err(|e| AnyError::new(&e))?;
            let table = txn.open_table(LOGS).map_err(|e| AnyError::new(&e))?;
            let mut entries = Vec::new();
            for row in table.range::<u64>(bounds).map_err(|e| AnyError::new(&e))? {
                let (_, value) = row.map_err(|e| AnyError::new(&e))?;
                entries.push(serde_json::from_slice(value.value()).map_err(|e| AnyError::new(&e))?);
            }
            Ok(entries)
        })
        .await
        .map_err(|e| AnyError::new(&e))
        .and_then(|r| r);
        read.map_err(|e| StorageError::IO {
            source: StorageIOError::read_logs(e),
        })
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(KEY_PURGED)?;
        let db = self.db.clone();
        let last = tokio::task::spawn_blocking(move || -> Result<Option<LogId>, AnyError> {
            let txn = db.begin_read().map_err(|e| AnyError::new(&e))?;
            let table = txn.open_table(LOGS).map_err(|e| AnyError::new(&e))?;
            let Some((_, value)) = table.last().map_err(|e| AnyError::new(&e))? else {
                return Ok(None);
            };
            let entry: Entry =
                serde_json::from_slice(value.value()).map_err(|e| AnyError::new(&e))?;
            Ok(Some(entry.log_id))
        })
        .await
        .map_err(|e| AnyError::new(&e))
        .and_then(|r| r)
        .map_err(|e| StorageError::IO {
            source: StorageIOError::read_logs(e),
        })?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote, Durability::Immediate).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(log_id) = committed {
            self.committed.store(log_id.index, Ordering::Relaxed);
        }
        self.write_meta(KEY_COMMITTED, &committed, Durability::None)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| StorageError::IO {
                source: StorageIOError::write_logs(&e),
            })?;
            rows.push((entry.log_id.index, bytes));
        }
        let result = self
            .write(Durability::Immediate, ErrorSubject::Logs, move |txn| {
                let mut table = txn.open_table(LOGS)?;
                for (index, bytes) in &rows {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        // Raft may acknowledge the entries only once they are on disk: report after commit.
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(Durability::Immediate, ErrorSubject::Logs, move |txn| {
            txn.open_table(LOGS)?
                .retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&log_id).map_err(|e| StorageError::IO {
            source: StorageIOError::write(&e),
        })?;
        // Record the purge point first and in the same transaction, so a crash never
        // leaves a log whose start is unknown.
        self.write(Durability::Immediate, ErrorSubject::Logs, move |txn| {
            txn.open_table(META)?.insert(KEY_PURGED, bytes.as_slice())?;
            txn.open_table(LOGS)?
                .retain_in(..=log_id.index, |_, _| false)?;
            Ok(())
        })
        .await
    }
}
