//! A real PostgreSQL cluster of our own: its own data dir and port, never the system's.
//!
//! The data dir is a copy of a template made once by `initdb` and cached in the temp
//! dir (initdb takes seconds; a copy takes a fraction of one). When we run as root,
//! PostgreSQL runs as the `postgres` user, which it requires.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{Uid, User};
use tokio_postgres::NoTls;

use crate::ports::free_port;
use crate::process::{run_checked, ChildGuard};
use crate::{dirs, io_context, netns, wait_until, HarnessError};

/// The superuser of every cluster we create (trust authentication, loopback only).
pub const SUPERUSER: &str = "ledger";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct PgOptions {
    /// fsync and synchronous commit on (benchmarks, the local deployment); off for tests.
    pub durable: bool,
    pub max_connections: u32,
    /// A fixed port (the local deployment); `None` picks a free one.
    pub port: Option<u16>,
    /// Start in a new process group (so a whole region can be signalled at once).
    pub own_process_group: bool,
    /// Address to listen on and to put in URLs (`None`: 127.0.0.1). Set with
    /// `namespace`: the address of the namespace's interface, which also trusts
    /// connections from its subnet (pg_hba `samenet`).
    pub host: Option<String>,
    /// Network namespace to run in (see [`crate::netns`]).
    pub namespace: Option<String>,
    /// Serve TLS with this certificate, and refuse plain connections to one database.
    pub tls: Option<PgTls>,
}

/// TLS of a test cluster.
#[derive(Debug, Clone)]
pub struct PgTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Plain connections to this database are refused (pg_hba `hostnossl ... reject`);
    /// the harness keeps reaching `postgres` in plain text. `None`: TLS is offered,
    /// plain connections are still taken.
    pub required_for: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            durable: false,
            max_connections: 200,
            port: None,
            own_process_group: false,
            host: None,
            namespace: None,
            tls: None,
        }
    }
}

#[derive(Debug)]
pub struct PgCluster {
    guard: ChildGuard,
    host: String,
    port: u16,
}

impl PgCluster {
    /// Starts a cluster whose data lives in `dir/pgdata` (created from the template if
    /// missing, reused otherwise) and waits until it accepts connections.
    pub async fn start(dir: &Path, options: &PgOptions) -> Result<Self, HarnessError> {
        let bin = bin_dir()?;
        let data_dir = dir.join("pgdata");
        if !data_dir.join("PG_VERSION").exists() {
            let template = ensure_template(&bin)?;
            run_checked(
                "copy the cluster template",
                Command::new("cp").arg("-a").arg(&template).arg(&data_dir),
            )?;
        }
        if let Some(tls) = &options.tls {
            install_tls(&data_dir, tls)?;
        }
        let log = dir.join("postgres.log");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = match options.port {
                Some(port) => port,
                None => free_port()?,
            };
            let mut command = Command::new(bin.join("postgres"));
            command
                .arg("-D")
                .arg(&data_dir)
                .arg("-p")
                .arg(port.to_string());
            for setting in settings(options) {
                command.arg("-c").arg(setting);
            }
            let mut command = match &options.namespace {
                Some(namespace) => {
                    trust_subnet(&data_dir)?;
                    in_namespace_as_postgres(&command, namespace)?
                }
                None => {
                    as_postgres_user(&mut command)?;
                    command
                }
            };
            if options.own_process_group {
                command.process_group(0);
            }
            let guard =
                ChildGuard::spawn(format!("postgres :{port}"), command, &log, Signal::SIGINT)?;
            let host = options.host.clone().unwrap_or_else(|| "127.0.0.1".into());
            let mut cluster = PgCluster { guard, host, port };
            match cluster.wait_ready().await {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let clash = std::fs::read_to_string(&log).is_ok_and(|text| {
                        text.contains("could not bind") || text.contains("in use")
                    });
                    if options.port.is_some() || !clash {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or(HarnessError::Command {
            what: "start postgres".into(),
            detail: "no port attempt made".into(),
        }))
    }

    /// [`PgCluster::start`], then creates `database`; returns the cluster and its URL.
    pub async fn start_with_database(
        dir: &Path,
        options: &PgOptions,
        database: &str,
    ) -> Result<(Self, String), HarnessError> {
        let cluster = Self::start(dir, options).await?;
        let url = cluster.create_database(database).await?;
        Ok((cluster, url))
    }

    async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let url = self.url("postgres");
        let mut exited = None;
        let ready = wait_until(READY_TIMEOUT, Duration::from_millis(50), || {
            let status = self.guard.exited();
            let url = url.clone();
            exited = status.clone();
            async move {
                if status.is_some() {
                    return Some(false);
                }
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.ok()?;
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await.ok().map(|_| true)
            }
        })
        .await;
        match (ready, exited) {
            (Some(true), _) => Ok(()),
            (_, Some(status)) => Err(HarnessError::Exited {
                what: self.guard.name().to_owned(),
                status,
                log: Some(self.guard.log().to_owned()),
            }),
            _ => Err(HarnessError::Timeout {
                what: self.guard.name().to_owned(),
                waited: READY_TIMEOUT,
                log: Some(self.guard.log().to_owned()),
            }),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the process the harness started (the server, or its wrapper).
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{}:{}/{database}",
            self.host, self.port
        )
    }

    /// Creates a database (if missing) and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, HarnessError> {
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls).await?;
        tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            // Identifiers cannot be bound as parameters; quote it.
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            client
                .batch_execute(&format!("CREATE DATABASE {quoted}"))
                .await?;
        }
        Ok(self.url(name))
    }

    /// Fast shutdown (SIGINT), waiting for the server to exit.
    pub fn stop(&mut self) -> Option<String> {
        self.guard.stop()
    }

    /// Leaves the server running past this value; returns its pid.
    pub fn detach(self) -> Option<u32> {
        self.guard.detach()
    }
}

fn settings(options: &PgOptions) -> Vec<String> {
    let listen = match &options.host {
        Some(host) => format!("listen_addresses=127.0.0.1,{host}"),
        None => "listen_addresses=127.0.0.1".to_owned(),
    };
    let mut settings = vec![
        listen,
        "unix_socket_directories=".to_owned(),
        format!("max_connections={}", options.max_connections),
        "shared_buffers=128MB".to_owned(),
        "log_min_messages=warning".to_owned(),
    ];
    if options.tls.is_some() {
        // Relative to the data directory, where install_tls put them.
        settings.extend(
            [
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
            ]
            .map(String::from),
        );
    }
    if !options.durable {
        settings.extend(
            [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ]
            .map(String::from),
        );
    }
    settings
}

/// The directory of PostgreSQL's server binaries: `LEDGER_PG_BIN`, else the newest
/// Debian install under /usr/lib/postgresql.
pub fn bin_dir() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("LEDGER_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| HarnessError::MissingBinary("PostgreSQL", "LEDGER_PG_BIN"))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(HarnessError::MissingBinary("PostgreSQL", "LEDGER_PG_BIN"))
}

/// The `postgres` user's uid and gid when we run as root (PostgreSQL refuses root).
fn postgres_user() -> Result<Option<User>, HarnessError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    User::from_name("postgres")
        .map_err(|e| HarnessError::Command {
            what: "look up the postgres user".into(),
            detail: e.to_string(),
        })?
        .map(Some)
        .ok_or_else(|| HarnessError::Command {
            what: "look up the postgres user".into(),
            detail: "running as root needs a 'postgres' user (apt-get install postgresql)".into(),
        })
}

/// `command` inside `namespace`, switched to the postgres user there when we are root.
fn in_namespace_as_postgres(command: &Command, namespace: &str) -> Result<Command, HarnessError> {
    Ok(match postgres_user()? {
        Some(user) => netns::in_namespace(
            &netns::as_user(command, user.uid.as_raw(), user.gid.as_raw()),
            namespace,
        ),
        None => netns::in_namespace(command, namespace),
    })
}

/// Copies the certificate and key into the data directory (the key readable only by
/// the server's user, as PostgreSQL demands) and refuses plain connections to
/// `tls.required_for`, if any (first line of pg_hba.conf: the first match decides).
fn install_tls(data_dir: &Path, tls: &PgTls) -> Result<(), HarnessError> {
    for (from, name) in [
        (&tls.cert_file, "server.crt"),
        (&tls.key_file, "server.key"),
    ] {
        let to = data_dir.join(name);
        std::fs::copy(from, &to).map_err(io_context(format!("copy {}", from.display())))?;
        own_by_postgres(&to, 0o600)?;
    }
    let Some(database) = &tls.required_for else {
        return Ok(());
    };
    add_hba_line(
        data_dir,
        &format!("hostnossl {database} all all reject"),
        true,
    )
}

/// Gives `path` mode `mode` and, when the server runs as the `postgres` user, to that
/// user (the server refuses key files and data directories others can read).
fn own_by_postgres(path: &Path, mode: u32) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_context(format!("chmod {}", path.display())))?;
    if let Some(user) = postgres_user()? {
        nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
            HarnessError::Command {
                what: format!("chown {}", path.display()),
                detail: e.to_string(),
            }
        })?;
    }
    Ok(())
}

/// Lets hosts of the server's own subnets in (the namespace's bridge and its peers),
/// streaming replication included; the template trusts loopback only.
fn trust_subnet(data_dir: &Path) -> Result<(), HarnessError> {
    add_hba_line(data_dir, "host all all samenet trust", false)?;
    add_hba_line(data_dir, "host replication all samenet trust", false)
}

/// Makes `dir/pgdata` a streaming standby of the server at `host:port`: a base backup
/// taken over the network (from inside `namespace`, if given, so it crosses the same
/// links as the standby will), with `standby.signal` and `primary_conninfo` written.
/// Start it with [`PgCluster::start`] on the same `dir`. The server must let
/// replication connections in (a cluster started in a namespace does).
pub fn base_backup(
    dir: &Path,
    host: &str,
    port: u16,
    namespace: Option<&str>,
) -> Result<(), HarnessError> {
    let data_dir = dir.join("pgdata");
    // pg_basebackup fills an empty directory its user owns, mode 0700 as the server wants.
    std::fs::create_dir_all(&data_dir)
        .map_err(io_context(format!("create {}", data_dir.display())))?;
    own_by_postgres(&data_dir, 0o700)?;
    let mut command = Command::new(bin_dir()?.join("pg_basebackup"));
    command
        .args(["-h", host, "-p", &port.to_string(), "-U", SUPERUSER])
        .arg("-D")
        .arg(&data_dir)
        .args(["-X", "stream", "-R", "--checkpoint=fast"]);
    let mut command = match namespace {
        Some(namespace) => in_namespace_as_postgres(&command, namespace)?,
        None => {
            as_postgres_user(&mut command)?;
            command
        }
    };
    run_checked(
        &format!("take a base backup of {host}:{port}"),
        &mut command,
    )
    .map(|_| ())
}

/// Adds `line` to the cluster's pg_hba.conf once: first (it decides before every other
/// line) or last.
fn add_hba_line(data_dir: &Path, line: &str, first: bool) -> Result<(), HarnessError> {
    let hba = data_dir.join("pg_hba.conf");
    let text =
        std::fs::read_to_string(&hba).map_err(io_context(format!("read {}", hba.display())))?;
    if text.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let text = if first {
        format!("{line}\n{text}")
    } else {
        format!("{text}\n{line}\n")
    };
    std::fs::write(&hba, text).map_err(io_context(format!("write {}", hba.display())))
}

fn as_postgres_user(command: &mut Command) -> Result<(), HarnessError> {
    if let Some(user) = postgres_user()? {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    Ok(())
}

/// Makes (once per machine, user and PostgreSQL version) the initdb'd template that
/// every cluster is copied from; concurrent callers race safely via rename.
fn ensure_template(bin: &Path) -> Result<PathBuf, HarnessError> {
    let version = bin
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("pg");
    let template = std::env::temp_dir().join(format!(
        "ledger-pg-template-{}-{version}",
        Uid::effective().as_raw()
    ));
    if template.join("PG_VERSION").exists() {
        return Ok(template);
    }
    let staging = template.with_extension(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    dirs::make_shared_dir(&staging)?;
    if let Some(user) = postgres_user()? {
        std::os::unix::fs::chown(&staging, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(io_context(format!("chown {}", staging.display())))?;
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb.arg("-D").arg(&staging).args([
        "-U",
        SUPERUSER,
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    as_postgres_user(&mut initdb)?;
    run_checked("initdb", &mut initdb)?;
    if std::fs::rename(&staging, &template).is_err() {
        // Another process made the template first; use theirs.
        let _ = std::fs::remove_dir_all(&staging);
    }
    if template.join("PG_VERSION").exists() {
        Ok(template)
    } else {
        Err(HarnessError::Command {
            what: "make the cluster template".into(),
            detail: format!("{} has no PG_VERSION", template.display()),
        })
    }
}
