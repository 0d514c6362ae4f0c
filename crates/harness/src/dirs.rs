//! Working directories for started processes, reachable by the `postgres` user when we
//! run as root (PostgreSQL refuses to run as root, so it runs as that user).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{io_context, HarnessError};

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A directory removed on drop, unless the thread is panicking (then it is kept and its
/// path printed, so a failed test's logs can be read) or `LEDGER_KEEP_DIRS` is set.
/// Before it is removed, its `*.log` files are copied to `target/test-logs/<name>/`:
/// a test that fails by returning an error (no panic) keeps its process logs too.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    remove: bool,
}

/// `target/test-logs` of the running test binary (`target/<profile>/deps/<test>`), or
/// `None` when the binary does not live in a cargo target dir.
fn test_logs_root() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    Some(deps.parent()?.parent()?.join("test-logs"))
}

/// Copies every `*.log` below `from` to the same relative path below `to`.
fn copy_logs(from: &Path, to: &Path) -> std::io::Result<usize> {
    let mut copied = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            // Unreadable directories (a PostgreSQL data dir of another user) are skipped.
            copied += copy_logs(&entry.path(), &target).unwrap_or(0);
        } else if kind.is_file() && entry.path().extension().is_some_and(|e| e == "log") {
            std::fs::create_dir_all(to)?;
            std::fs::copy(entry.path(), &target)?;
            copied += 1;
        }
    }
    Ok(copied)
}

impl WorkDir {
    /// A fresh directory under the system temp dir, named after `label` and this process.
    pub fn temp(label: &str) -> Result<Self, HarnessError> {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ledger-{label}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .map_err(io_context(format!("clear {}", path.display())))?;
        }
        make_shared_dir(&path)?;
        Ok(WorkDir {
            path,
            remove: std::env::var_os("LEDGER_KEEP_DIRS").is_none(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, part: &str) -> PathBuf {
        self.path.join(part)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
        } else if self.remove {
            if let (Some(root), Some(name)) = (test_logs_root(), self.path.file_name()) {
                let to = root.join(name);
                let _ = std::fs::remove_dir_all(&to);
                if let Ok(n) = copy_logs(&self.path, &to) {
                    if n > 0 {
                        // Shown by the test runner only when the test failed.
                        eprintln!("{n} process logs copied to {}", to.display());
                    }
                }
            }
            // Best effort: a leftover temp dir is harmless.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Creates `path` (and parents) world-traversable, so a process of another user can
/// reach the directories it owns below it.
pub fn make_shared_dir(path: &Path) -> Result<(), HarnessError> {
    std::fs::create_dir_all(path).map_err(io_context(format!("create {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(io_context(format!("chmod {}", path.display())))
}

/// True when every ancestor of `path` lets other users through (mode o+x), so the
/// `postgres` user can reach a data directory there.
pub fn traversable_by_others(path: &Path) -> bool {
    path.ancestors().skip(1).all(|dir| {
        std::fs::metadata(dir)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}
