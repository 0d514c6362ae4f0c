//! Child processes held by pid and stopped by that pid.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::{io_context, HarnessError};

/// How long a stopped process may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A started process; dropping the guard stops it (polite signal, then SIGKILL).
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    stop_signal: Signal,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: impl Into<String>,
        mut command: Command,
        log: &Path,
        stop_signal: Signal,
    ) -> Result<Self, HarnessError> {
        let name = name.into();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_context(format!("open log {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_context(format!("clone log {}", log.display())))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .map_err(io_context(format!("start {name}")))?;
        Ok(ChildGuard {
            name,
            child: Some(child),
            stop_signal,
            log: log.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The pid, while the process is held.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// An error if the process has already exited, naming its log.
    pub fn ensure_running(&mut self) -> Result<(), HarnessError> {
        match self.exited() {
            Some(status) => Err(HarnessError::Exited {
                what: self.name.clone(),
                status,
                log: Some(self.log.clone()),
            }),
            None => Ok(()),
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        let pid = self.pid().ok_or_else(|| HarnessError::Command {
            what: format!("signal {}", self.name),
            detail: "process already reaped".into(),
        })?;
        send(pid, signal).map_err(|e| HarnessError::Command {
            what: format!("signal {} ({pid})", self.name),
            detail: e.to_string(),
        })
    }

    /// Stops the process: its stop signal, then SIGKILL after the grace period.
    /// Returns the exit status.
    pub fn stop(&mut self) -> Option<String> {
        self.stop_with(self.stop_signal, STOP_GRACE)
    }

    fn stop_with(&mut self, first: Signal, grace: Duration) -> Option<String> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status.to_string());
        }
        let _ = send(child.id(), first);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok().map(|s| s.to_string())
    }

    /// Lets the process outlive the guard (the local deployment's `up`); returns its pid.
    pub fn detach(mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn send(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    signal::kill(Pid::from_raw(pid), signal)
}

/// Sends `signal` to a whole process group (a region of the local deployment).
pub fn signal_group(pgid: u32, signal: Signal) -> nix::Result<()> {
    let pgid = i32::try_from(pgid).map_err(|_| nix::errno::Errno::ESRCH)?;
    signal::killpg(Pid::from_raw(pgid), signal)
}

/// True while a process with this pid exists (and is not a zombie we could see).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if signal::kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    // A zombie still answers kill(0); its /proc status says so. But the main thread of
    // a multi-threaded process turns zombie first, while its other threads still exit
    // and still hold its files (a listening socket: a successor's bind would fail
    // with "address in use"), so a zombie with threads left is still alive.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    });
    match zombie {
        Ok(false) => true,
        Ok(true) => threads_left(pid) > 1,
        Err(_) => false,
    }
}

/// How many threads `/proc` still lists for `pid` (0 when it is gone).
fn threads_left(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}

/// Runs a command to completion, failing with its output when it fails.
pub fn run_checked(what: &str, command: &mut Command) -> Result<String, HarnessError> {
    let output = command
        .output()
        .map_err(io_context(format!("run {what}")))?;
    if !output.status.success() {
        return Err(HarnessError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
