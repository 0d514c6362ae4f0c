//! A real Kafka-protocol broker (Tansu, or its successor nisshi) on loopback, storing
//! its data with the sqlite engine in its own directory, so that a restart (even after
//! SIGKILL) keeps topics, messages and consumer groups; and the index its storage lacks
//! ([`index_headers`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::ChildGuard;
use crate::{free_port, io_context, wait_until, HarnessError};

/// The Kafka-protocol brokers the project can run. Both take the same command line
/// and keep the same sqlite schema (nisshi is Tansu renamed, with fixes: a fetch that
/// found data answers at once instead of sleeping out `fetch.wait.max.ms`, and its
/// storage loop survives a caller that gives up). Which one every test, benchmark and
/// deployment starts: `$LEDGER_BROKER` (`nisshi` or `tansu`), else [`BrokerKind::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Tansu,
    Nisshi,
}

impl BrokerKind {
    /// The broker the project runs unless told otherwise. Tansu: measured side by side
    /// at 1,000 writes/s for 60 s, nisshi's own produce-to-consume was faster but its
    /// replication lag was not, and one of two runs collapsed (ARCHITECTURE.md,
    /// "Performance", "Tansu or nisshi").
    pub const DEFAULT: BrokerKind = BrokerKind::Tansu;

    /// The crate and binary name.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Tansu => "tansu",
            BrokerKind::Nisshi => "nisshi",
        }
    }

    /// The version the project pins (scripts/setup.sh installs exactly this).
    pub fn version(self) -> &'static str {
        match self {
            BrokerKind::Tansu => "0.6.0",
            BrokerKind::Nisshi => "0.6.0",
        }
    }

    /// `$LEDGER_BROKER`, else [`BrokerKind::DEFAULT`].
    pub fn from_env() -> Result<BrokerKind, HarnessError> {
        match std::env::var("LEDGER_BROKER") {
            Ok(name) => name.parse(),
            Err(_) => Ok(BrokerKind::DEFAULT),
        }
    }

    /// The binary: `$LEDGER_BROKER_BIN`, else the setup script's cache
    /// (`$LEDGER_TOOLS_DIR` or `~/.cache/ledger-tools`, then `<name>-<version>/bin/<name>`).
    pub fn bin(self) -> Result<PathBuf, HarnessError> {
        if let Some(path) = std::env::var_os("LEDGER_BROKER_BIN") {
            return Ok(PathBuf::from(path));
        }
        let missing = || HarnessError::MissingBinary(self.name(), "LEDGER_BROKER_BIN");
        let tools = std::env::var_os("LEDGER_TOOLS_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ledger-tools")))
            .ok_or_else(missing)?;
        let bin = tools.join(format!(
            "{name}-{version}/bin/{name}",
            name = self.name(),
            version = self.version()
        ));
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(missing())
        }
    }
}

impl std::str::FromStr for BrokerKind {
    type Err = HarnessError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "tansu" => Ok(BrokerKind::Tansu),
            "nisshi" => Ok(BrokerKind::Nisshi),
            other => Err(HarnessError::Command {
                what: "choose the broker (LEDGER_BROKER)".into(),
                detail: format!("{other:?} is neither \"nisshi\" nor \"tansu\""),
            }),
        }
    }
}

impl std::fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name(), self.version())
    }
}

/// The binary of the broker chosen by `$LEDGER_BROKER` (see [`BrokerKind::bin`]).
pub fn broker_bin() -> Result<PathBuf, HarnessError> {
    BrokerKind::from_env()?.bin()
}

/// The broker's sqlite file under its directory (see [`Broker::command`]).
pub fn data_file(dir: &Path) -> PathBuf {
    dir.join("data/tansu.db")
}

/// The index [`index_headers`] creates.
const HEADER_INDEX: &str = "header_topition_offset";

/// How long [`index_headers`] waits for the broker to have made its tables.
pub const INDEX_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the index the sqlite storage of Tansu 0.6 and nisshi 0.6 lacks, in the file of a running broker.
///
/// Its fetch path reads each fetched record's headers from the `header` table by
/// `(topition, offset_id)`, and that table has no key or index: every fetched record
/// cost a full scan, so fetches slowed down as a topic grew (at 1,000 writes/s the
/// replication lag p99 was 63 ms with it and not sustained without it; ARCHITECTURE.md,
/// "Performance", "Replication"). Waits for
/// the broker to have created the table; `IF NOT EXISTS`, so a restart on the same data
/// costs nothing. SQLite's own locking makes the write safe next to the broker's.
pub async fn index_headers(data_file: &Path) -> Result<(), HarnessError> {
    let last_error = std::sync::Mutex::new(String::new());
    let created = wait_until(INDEX_TIMEOUT, Duration::from_millis(50), || {
        let file = data_file.to_owned();
        let last_error = &last_error;
        async move {
            let attempt = tokio::task::spawn_blocking(move || create_header_index(&file))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match attempt {
                Ok(()) => Some(()),
                Err(error) => {
                    if let Ok(mut last) = last_error.lock() {
                        *last = error;
                    }
                    None
                }
            }
        }
    })
    .await;
    created.ok_or_else(|| HarnessError::Command {
        what: format!("index the broker's headers in {}", data_file.display()),
        detail: last_error.lock().map(|e| e.clone()).unwrap_or_default(),
    })
}

/// The broker's sqlite file, opened beside the running broker (SQLite's file locks
/// order our statements with its own; a busy file is waited for).
fn open_storage(file: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.busy_timeout(Duration::from_secs(5))?;
    Ok(db)
}

fn create_header_index(file: &Path) -> rusqlite::Result<()> {
    open_storage(file)?.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {HEADER_INDEX} ON header (topition, offset_id)"
    ))
}

#[derive(Debug)]
pub struct Broker {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    process: Option<ChildGuard>,
    /// Whether [`index_headers`] runs after each start (off only to measure without it).
    index: bool,
    maintenance: Duration,
}

/// How often every broker the project starts runs its maintenance (the retention pass
/// that deletes records older than a topic's `retention.ms`, when its `cleanup.policy`
/// is `delete`). Tansu's default is 10 minutes; shorter passes delete less each.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

impl Broker {
    /// Starts a broker on a free port with its data under `dir`, and waits until it
    /// accepts connections.
    pub async fn start(dir: &Path) -> Result<Broker, HarnessError> {
        Broker::start_with(dir, true).await
    }

    /// [`Broker::start`], with or without [`index_headers`] (the benchmark measures
    /// both).
    pub async fn start_with(dir: &Path, index: bool) -> Result<Broker, HarnessError> {
        Broker::start_maintained(dir, index, MAINTENANCE_INTERVAL).await
    }

    /// [`Broker::start_with`], running its maintenance (retention) every `maintenance`.
    pub async fn start_maintained(
        dir: &Path,
        index: bool,
        maintenance: Duration,
    ) -> Result<Broker, HarnessError> {
        let port = free_port()?;
        std::fs::create_dir_all(dir.join("data"))
            .map_err(io_context(format!("make broker dir {}", dir.display())))?;
        let mut broker = Broker {
            bin: broker_bin()?,
            dir: dir.to_owned(),
            port,
            process: None,
            index,
            maintenance,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// `host:port` for Kafka clients.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The command that runs the broker `bin` on `host:port` (which it also advertises) with its
    /// sqlite data under `dir/data`, maintained every [`MAINTENANCE_INTERVAL`].
    pub fn command(bin: &Path, dir: &Path, host: &str, port: u16) -> Command {
        Broker::command_maintained(bin, dir, host, port, MAINTENANCE_INTERVAL)
    }

    /// [`Broker::command`] with its own maintenance interval.
    pub fn command_maintained(
        bin: &Path,
        dir: &Path,
        host: &str,
        port: u16,
        maintenance: Duration,
    ) -> Command {
        let url = format!("tcp://{host}:{port}");
        // The broker reads the interval from the storage URL's query (humantime).
        let storage = format!(
            "sqlite://data/tansu.db?maintenance_interval={}ms",
            maintenance.as_millis()
        );
        let mut command = Command::new(bin);
        command
            .current_dir(dir)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // data_file(dir) is this path.
            .args(["--storage-engine", &storage])
            .env("RUST_LOG", "warn");
        command
    }

    async fn spawn(&mut self) -> Result<(), HarnessError> {
        let command = Broker::command_maintained(
            &self.bin,
            &self.dir,
            "127.0.0.1",
            self.port,
            self.maintenance,
        );
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
        if self.index {
            index_headers(&data_file(&self.dir)).await?;
        }
        Ok(())
    }

    /// Deletes offsets `[from, to)` of a partition from the broker's storage, the way
    /// its retention pass deletes old records: what an applier that had not read them
    /// yet must notice. Returns how many records went.
    pub fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<usize, HarnessError> {
        let delete = || -> rusqlite::Result<usize> {
            open_storage(&data_file(&self.dir))?.execute(
                "DELETE FROM record
                 WHERE topition = (SELECT tp.id FROM topition tp JOIN topic t ON t.id = tp.topic
                                   WHERE t.name = ?1 AND tp.partition = ?2)
                   AND offset_id >= ?3 AND offset_id < ?4",
                rusqlite::params![topic, partition, from, to],
            )
        };
        delete().map_err(|e| HarnessError::Command {
            what: format!("delete records of {topic}/{partition} from the broker's storage"),
            detail: e.to_string(),
        })
    }

    /// The configuration stored with `topic` (name, value), as the broker keeps it.
    pub fn topic_configuration(&self, topic: &str) -> Result<Vec<(String, String)>, HarnessError> {
        let read = || -> rusqlite::Result<Vec<(String, String)>> {
            let db = open_storage(&data_file(&self.dir))?;
            let mut statement = db.prepare(
                "SELECT tc.name, tc.value FROM topic_configuration tc
                 JOIN topic t ON t.id = tc.topic WHERE t.name = ?1 ORDER BY tc.name",
            )?;
            let rows = statement.query_map([topic], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        read().map_err(|e| HarnessError::Command {
            what: format!("read the configuration of {topic} from the broker's storage"),
            detail: e.to_string(),
        })
    }

    /// Records of `topic` the broker's storage still holds.
    pub fn record_count(&self, topic: &str) -> Result<i64, HarnessError> {
        let count = || -> rusqlite::Result<i64> {
            open_storage(&data_file(&self.dir))?.query_row(
                "SELECT count(*) FROM record r JOIN topition tp ON tp.id = r.topition
                 JOIN topic t ON t.id = tp.topic WHERE t.name = ?1",
                [topic],
                |r| r.get(0),
            )
        };
        count().map_err(|e| HarnessError::Command {
            what: format!("count the records of {topic} in the broker's storage"),
            detail: e.to_string(),
        })
    }

    /// Changes one configuration value of `topic` in the broker's storage (Tansu 0.6
    /// has no AlterConfigs): what an operator's config change would do.
    pub fn set_topic_configuration(
        &self,
        topic: &str,
        name: &str,
        value: &str,
    ) -> Result<usize, HarnessError> {
        let update = || -> rusqlite::Result<usize> {
            open_storage(&data_file(&self.dir))?.execute(
                "UPDATE topic_configuration SET value = ?3
                 WHERE name = ?2 AND topic = (SELECT id FROM topic WHERE name = ?1)",
                rusqlite::params![topic, name, value],
            )
        };
        update().map_err(|e| HarnessError::Command {
            what: format!("set {name} of {topic} in the broker's storage"),
            detail: e.to_string(),
        })
    }

    /// Whether the broker's storage has the index of [`index_headers`].
    pub fn headers_indexed(&self) -> Result<bool, HarnessError> {
        let check = || -> rusqlite::Result<bool> {
            open_storage(&data_file(&self.dir))?
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1",
                    [HEADER_INDEX],
                    |row| row.get::<_, i64>(0),
                )
                .map(|n| n == 1)
        };
        check().map_err(|e| HarnessError::Command {
            what: "read the broker's schema".into(),
            detail: e.to_string(),
        })
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
