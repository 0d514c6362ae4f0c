//! A real Kafka-protocol broker (Tansu) on loopback, storing its data with the sqlite
//! engine in its own directory, so that a restart (even after SIGKILL) keeps topics,
//! messages and consumer groups.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::ChildGuard;
use crate::{free_port, io_context, wait_until, HarnessError};

/// Version of Tansu the project pins (scripts/setup.sh installs exactly this).
pub const TANSU_VERSION: &str = "0.6.0";

/// The Tansu binary: `$LEDGER_TANSU_BIN`, else the setup script's cache
/// (`$LEDGER_TOOLS_DIR` or `~/.cache/ledger-tools`, then `tansu-<version>/bin/tansu`).
pub fn tansu_bin() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os("LEDGER_TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    let tools = std::env::var_os("LEDGER_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ledger-tools")))
        .ok_or(HarnessError::MissingBinary("tansu", "LEDGER_TANSU_BIN"))?;
    let bin = tools.join(format!("tansu-{TANSU_VERSION}/bin/tansu"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(HarnessError::MissingBinary("tansu", "LEDGER_TANSU_BIN"))
    }
}

#[derive(Debug)]
pub struct Broker {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    process: Option<ChildGuard>,
}

impl Broker {
    /// Starts a broker on a free port with its data under `dir`, and waits until it
    /// accepts connections.
    pub async fn start(dir: &Path) -> Result<Broker, HarnessError> {
        let port = free_port()?;
        std::fs::create_dir_all(dir.join("data"))
            .map_err(io_context(format!("make broker dir {}", dir.display())))?;
        let mut broker = Broker {
            bin: tansu_bin()?,
            dir: dir.to_owned(),
            port,
            process: None,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// `host:port` for Kafka clients.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The command that runs Tansu on `port` with its sqlite data under `dir/data`.
    pub fn command(bin: &Path, dir: &Path, port: u16) -> Command {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(bin);
        command
            .current_dir(dir)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://data/tansu.db"])
            .env("RUST_LOG", "warn");
        command
    }

    async fn spawn(&mut self) -> Result<(), HarnessError> {
        let command = Broker::command(&self.bin, &self.dir, self.port);
        let log = self.dir.join("broker.log");
        let mut child = ChildGuard::spawn(
            format!("broker:{}", self.port),
            command,
            &log,
            Signal::SIGTERM,
        )?;
        let addr = self.addr();
        let up = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            let connect = tokio::net::TcpStream::connect(addr.clone());
            async move { connect.await.ok().map(|_| ()) }
        })
        .await;
        child.ensure_running()?;
        if up.is_none() {
            return Err(HarnessError::Timeout {
                what: child.name().to_owned(),
                waited: Duration::from_secs(30),
                log: Some(log),
            });
        }
        self.process = Some(child);
        Ok(())
    }

    /// SIGKILLs the broker (data stays on disk).
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut process) = self.process.take() {
            process.signal(Signal::SIGKILL)?;
            // Reap it; the guard's stop finds it already exited.
            process.stop();
        }
        Ok(())
    }

    /// Starts the broker again on the same port and data.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill()?;
        self.spawn().await
    }
}
