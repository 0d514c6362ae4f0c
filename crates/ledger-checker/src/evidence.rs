//! A run's evidence on disk, what `ledger-check` reads: `history.jsonl` (the requests),
//! `ownership-history.json` (every ownership change) and `regions/<region>.json` (each
//! region's audit snapshot after healing).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ledger_wire::failover::AuditSnapshot;
use ledger_wire::ownership::ChangeRecord;

use crate::history::{self, Operation};
use crate::{check_invariants, InvariantReport};

pub const HISTORY_FILE: &str = "history.jsonl";
pub const OWNERSHIP_FILE: &str = "ownership-history.json";
pub const REGIONS_DIR: &str = "regions";

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}")]
    Decode {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("encode {what}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{0} holds no region snapshot")]
    NoRegions(PathBuf),
}

/// Everything the checker needs.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub operations: Vec<Operation>,
    pub ownership: Vec<ChangeRecord>,
    pub snapshots: Vec<AuditSnapshot>,
}

impl Evidence {
    /// The verdict on every invariant.
    pub fn check(&self) -> InvariantReport {
        let acked = history::acknowledged(&self.operations);
        let sent: HashSet<_> = history::sent_transfers(&self.operations);
        let mut report = check_invariants(&self.snapshots, &self.ownership, &acked, &sent);
        report
            .checks
            .push(crate::reads_consistent(&self.operations, &self.snapshots));
        report
    }

    pub fn write(&self, dir: &Path) -> Result<(), EvidenceError> {
        let regions = dir.join(REGIONS_DIR);
        std::fs::create_dir_all(&regions).map_err(|source| EvidenceError::Io {
            path: regions.clone(),
            source,
        })?;
        let mut lines = String::new();
        for operation in &self.operations {
            let line =
                serde_json::to_string(operation).map_err(|source| EvidenceError::Encode {
                    what: "an operation",
                    source,
                })?;
            let _ = writeln!(lines, "{line}");
        }
        write_file(&dir.join(HISTORY_FILE), lines.as_bytes())?;
        let ownership =
            serde_json::to_vec(&self.ownership).map_err(|source| EvidenceError::Encode {
                what: "the ownership history",
                source,
            })?;
        write_file(&dir.join(OWNERSHIP_FILE), &ownership)?;
        for snapshot in &self.snapshots {
            let bytes = serde_json::to_vec(snapshot).map_err(|source| EvidenceError::Encode {
                what: "a snapshot",
                source,
            })?;
            write_file(&regions.join(format!("{}.json", snapshot.region)), &bytes)?;
        }
        Ok(())
    }

    /// Reads what [`write`](Self::write) wrote; a missing history means no workload ran.
    pub fn read(dir: &Path) -> Result<Evidence, EvidenceError> {
        let history_path = dir.join(HISTORY_FILE);
        let operations = match std::fs::read_to_string(&history_path) {
            Ok(text) => decode_lines(&history_path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(EvidenceError::Io {
                    path: history_path,
                    source,
                })
            }
        };
        let ownership = decode_file(&dir.join(OWNERSHIP_FILE))?;
        let regions = dir.join(REGIONS_DIR);
        let entries = std::fs::read_dir(&regions).map_err(|source| EvidenceError::Io {
            path: regions.clone(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| EvidenceError::Io {
                path: regions.clone(),
                source,
            })?;
            if entry.path().extension().is_some_and(|e| e == "json") {
                paths.push(entry.path());
            }
        }
        if paths.is_empty() {
            return Err(EvidenceError::NoRegions(regions));
        }
        paths.sort();
        let snapshots = paths
            .iter()
            .map(|p| decode_file(p))
            .collect::<Result<Vec<AuditSnapshot>, _>>()?;
        Ok(Evidence {
            operations,
            ownership,
            snapshots,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    std::fs::write(path, bytes).map_err(|source| EvidenceError::Io {
        path: path.to_owned(),
        source,
    })
}

fn decode_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EvidenceError> {
    let bytes = std::fs::read(path).map_err(|source| EvidenceError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EvidenceError::Decode {
        path: path.to_owned(),
        line: source.line(),
        source,
    })
}

fn decode_lines(path: &Path, text: &str) -> Result<Vec<Operation>, EvidenceError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| EvidenceError::Decode {
                path: path.to_owned(),
                line: i + 1,
                source,
            })
        })
        .collect()
}
