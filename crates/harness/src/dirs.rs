//! Working directories for started processes, reachable by the `postgres` user when we
//! run as root (PostgreSQL refuses to run as root, so it runs as that user).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::{io_context, HarnessError};

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A directory removed on drop, unless the thread is panicking (then it is kept and its
/// path printed, so a failed test's logs can be read) or `LEDGER_KEEP_DIRS` is set.
/// Before it is removed, its `*.log` files are copied to `target/test-logs/<name>/`:
/// a test that fails by returning an error (no panic) keeps its process logs too.
///
/// In a test binary, dropping it also scans those logs ([`crate::log_scan`]): an ERROR
/// or panic line that neither the global allow-list nor [`WorkDir::allow_log_errors`]
/// names fails the test (the directory is then kept).
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    remove: bool,
    allowed_errors: Mutex<Vec<String>>,
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
            allowed_errors: Mutex::new(Vec::new()),
        })
    }

    /// Lines containing `fragment` are expected errors of this test (a fault it
    /// injects on purpose makes a process log them).
    pub fn allow_log_errors(&self, fragment: impl Into<String>) {
        if let Ok(mut allowed) = self.allowed_errors.lock() {
            allowed.push(fragment.into());
        }
    }

    /// The unexpected error lines in this directory's logs so far.
    pub fn unexpected_log_errors(&self) -> Vec<crate::log_scan::Finding> {
        let allowed = self
            .allowed_errors
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        crate::log_scan::unexpected_errors(&self.path, &allowed)
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
            return;
        }
        // Only tests are held to their logs (benchmarks and the local deployment use
        // work dirs too, outside any cargo `deps` dir).
        let findings = if test_logs_root().is_some() {
            self.unexpected_log_errors()
        } else {
            Vec::new()
        };
        if !findings.is_empty() {
            eprintln!("kept {} for inspection", self.path.display());
            let shown: Vec<String> = findings.iter().take(20).map(|f| f.to_string()).collect();
            panic!(
                "{} unexpected error lines in process logs (allow them with \
                 WorkDir::allow_log_errors if the test causes them):\n{}",
                findings.len(),
                shown.join("\n")
            );
        }
        if self.remove {
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

#[cfg(test)]
mod tests {
    use super::*;

    const PLANTED: &str =
        r#"{"level":"ERROR","target":"region_node::saga","fields":{"message":"planted"}}"#;

    #[test]
    fn a_planted_error_log_fails_the_drop_and_keeps_the_directory() {
        let dir = WorkDir::temp("planted-error").expect("make dir");
        let path = dir.path().to_owned();
        std::fs::write(dir.join("node.log"), format!("{PLANTED}\n")).expect("write log");
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(dir)));
        let message = dropped.expect_err("the drop must fail the test");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("1 unexpected error lines"), "{text}");
        assert!(path.join("node.log").exists(), "the directory is kept");
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn an_allowed_error_log_passes_and_the_directory_goes() {
        let dir = WorkDir::temp("allowed-error").expect("make dir");
        let path = dir.path().to_owned();
        std::fs::write(dir.join("node.log"), format!("{PLANTED}\n")).expect("write log");
        dir.allow_log_errors("planted");
        drop(dir);
        assert!(!path.exists());
    }
}
