//! The Raft state machine: applies committed proposals to [`OwnershipState`] in memory
//! and keeps snapshots on disk.
//!
//! The state lives in memory (it is O(slots + overrides + history)); what makes it
//! durable is the Raft log plus the latest snapshot file. On start the voter loads
//! the snapshot, and openraft re-applies the committed log after it. A snapshot is
//! written to a temporary file, fsynced, renamed over the old one and the directory
//! fsynced, so a crash leaves either the old or the new snapshot, never half of one.
//!
//! The file is the snapshot's meta as one JSON line, then the state's JSON exactly
//! as it travels to followers, so the state is serialised once per snapshot and
//! sending the snapshot needs no re-encoding.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use ledger_wire::ownership::Outcome;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::state::OwnershipState;
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::OwnershipError;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// What the state machine has applied, shared with the API's readers.
#[derive(Debug, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: OwnershipState,
}

/// Splits a snapshot file into its meta and the state's bytes.
fn split_snapshot_file(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), serde_json::Error> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let meta = serde_json::from_slice(&bytes[..end])?;
    Ok((meta, bytes.get(end + 1..).unwrap_or_default()))
}

/// Read access to the applied state, and a channel that ticks with the map version.
#[derive(Clone)]
pub struct StateView {
    applied: Arc<RwLock<Applied>>,
    version: watch::Receiver<u64>,
}

impl StateView {
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.applied.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that changes whenever the map version does.
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.version.clone()
    }
}

pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    version: watch::Sender<u64>,
    dir: PathBuf,
    metrics: Metrics,
    snapshots_built: u64,
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, loading the latest snapshot if there is one.
    pub fn open(dir: &Path, metrics: Metrics) -> Result<(Self, StateView), OwnershipError> {
        let path = dir.join(SNAPSHOT_FILE);
        let applied = match std::fs::read(&path) {
            Ok(bytes) => {
                let (meta, state) =
                    split_snapshot_file(&bytes).map_err(|e| OwnershipError::storage(&path, e))?;
                Applied {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                    state: serde_json::from_slice(state)
                        .map_err(|e| OwnershipError::storage(&path, e))?,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Applied::default(),
            Err(e) => return Err(OwnershipError::storage(&path, e)),
        };
        let (version, receiver) = watch::channel(applied.state.version());
        let applied = Arc::new(RwLock::new(applied));
        let view = StateView {
            applied: applied.clone(),
            version: receiver,
        };
        let store = StateMachineStore {
            applied,
            version,
            dir: dir.to_owned(),
            metrics,
            snapshots_built: 0,
        };
        Ok((store, view))
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.applied.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the snapshot file for `meta` and the state's `bytes`, crash-safely.
    async fn persist(&self, meta: &SnapshotMeta, state: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let dir = self.dir.clone();
        let signature = Some(meta.signature());
        let meta_line = serde_json::to_vec(meta).map_err(|e| StorageError::IO {
            source: StorageIOError::write_snapshot(signature.clone(), &e),
        })?;
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
            let mut out = std::fs::File::create(&tmp)?;
            out.write_all(&meta_line)?;
            out.write_all(b"\n")?;
            out.write_all(&state)?;
            out.sync_all()?;
            std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(state)
        })
        .await;
        match written {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(StorageError::IO {
                source: StorageIOError::write_snapshot(signature, &e),
            }),
            Err(e) => Err(StorageError::IO {
                source: StorageIOError::write_snapshot(signature, &e),
            }),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (last_applied, membership, state) = {
            let applied = self.applied.read().unwrap_or_else(PoisonError::into_inner);
            (
                applied.last_applied,
                applied.membership.clone(),
                applied.state.clone(),
            )
        };
        self.snapshots_built += 1;
        let snapshot_id = match last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.index, self.snapshots_built
            ),
            None => format!("empty-{}", self.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let state = serde_json::to_vec(&state).map_err(|e| StorageError::IO {
            source: StorageIOError::write_snapshot(Some(meta.signature()), &e),
        })?;
        let bytes = self.persist(&meta, state).await?;
        self.metrics.snapshot_bytes.set(bytes.len() as i64);
        tracing::info!(index = ?last_applied.map(|l| l.index), bytes = bytes.len(), "snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.read().unwrap_or_else(PoisonError::into_inner);
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        let version = {
            let mut applied = self.write_lock();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let outcome = match entry.payload {
                    EntryPayload::Normal(proposal) => {
                        let command = proposal.command.name();
                        let outcome = applied.state.apply(proposal);
                        self.metrics.record_applied(command, &outcome);
                        outcome
                    }
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        no_change(&applied.state)
                    }
                    EntryPayload::Blank => no_change(&applied.state),
                };
                outcomes.push(outcome);
            }
            applied.state.version()
        };
        self.version.send_if_modified(|current| {
            let changed = *current != version;
            *current = version;
            changed
        });
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineStore {
            applied: self.applied.clone(),
            version: self.version.clone(),
            dir: self.dir.clone(),
            metrics: self.metrics.clone(),
            snapshots_built: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let state: OwnershipState =
            serde_json::from_slice(snapshot.get_ref()).map_err(|e| StorageError::IO {
                source: StorageIOError::read_snapshot(Some(meta.signature()), &e),
            })?;
        self.persist(meta, snapshot.into_inner()).await?;
        let version = state.version();
        {
            let mut applied = self.write_lock();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            applied.state = state;
        }
        self.version.send_replace(version);
        tracing::info!(index = ?meta.last_log_id.map(|l| l.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let read = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| AnyError::new(&e))
        .and_then(|r| r.map_err(|e| AnyError::new(&e)));
        let bytes = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(StorageError::IO {
                    source: StorageIOError::read_snapshot(None, e),
                })
            }
        };
        let (meta, state) = split_snapshot_file(&bytes).map_err(|e| StorageError::IO {
            source: StorageIOError::read_snapshot(None, &e),
        })?;
        Ok(Some(Snapshot {
            snapshot: Box::new(Cursor::new(state.to_vec())),
            meta,
        }))
    }
}

fn no_change(state: &OwnershipState) -> Outcome {
    Outcome::Applied {
        version: state.version(),
        epoch: state.epoch(),
        change: None,
    }
}
