//! Starting a `region-node` binary and waiting until it serves.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::ChildGuard;
use crate::{wait_until, HarnessError};

/// The command that runs `bin` as region `region` on `database_url`, serving on
/// 127.0.0.1:`port`. Callers add what else they need (log level, process group).
pub fn region_node_command(bin: &Path, region: &str, database_url: &str, port: u16) -> Command {
    let mut command = Command::new(bin);
    command
        .env("LEDGER_REGION", region)
        .env("LEDGER_DATABASE_URL", database_url)
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"));
    command
}

/// Spawns `command` (a region node) with its output in `log`, and waits until
/// `http://127.0.0.1:port/readyz` answers 200; fails at once if the process exits.
pub async fn start_region_node(
    name: &str,
    command: Command,
    port: u16,
    log: &Path,
    timeout: Duration,
) -> Result<ChildGuard, HarnessError> {
    let mut node = ChildGuard::spawn(name, command, log, Signal::SIGTERM)?;
    wait_http_ready(
        &mut node,
        &format!("http://127.0.0.1:{port}/readyz"),
        timeout,
    )
    .await?;
    Ok(node)
}

/// Polls `url` until it answers 2xx, while `child` keeps running.
pub async fn wait_http_ready(
    child: &mut ChildGuard,
    url: &str,
    timeout: Duration,
) -> Result<(), HarnessError> {
    let http = reqwest::Client::new();
    let ready = wait_until(timeout, Duration::from_millis(50), || {
        let exited = child.exited().is_some();
        let request = http.get(url).send();
        async move {
            if exited {
                return Some(false);
            }
            request.await.ok()?.status().is_success().then_some(true)
        }
    })
    .await;
    child.ensure_running()?;
    match ready {
        Some(true) => Ok(()),
        _ => Err(HarnessError::Timeout {
            what: child.name().to_owned(),
            waited: timeout,
            log: Some(child.log().to_owned()),
        }),
    }
}
