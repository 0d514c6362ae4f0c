//! PostgreSQL over TLS for the ledger's services. A managed database (RDS, Cloud SQL)
//! is reached over the network, so its connections must be encrypted and its
//! certificate checked against the provider's CA: `--database-tls verify-full
//! --database-ca-file rds-ca.pem` (or `LEDGER_DATABASE_TLS` / `LEDGER_DATABASE_CA_FILE`).
//! There is deliberately no "encrypt but do not verify" mode: it stops nobody who can
//! sit between a node and its database. Without the flags (a database on the same
//! host) connections are plain, as before.
//!
//! Every connection of a service goes through [`DbTls`]: [`DbTls::configure`] sets the
//! connection's TLS mode, [`DbTls::connector`] hands tokio-postgres (or deadpool) the
//! rustls connector.

use std::path::PathBuf;

use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum DbTlsError {
    #[error("database TLS: {0}")]
    Tls(#[from] ledger_tls::TlsError),
    #[error("--database-ca-file is given but --database-tls is disable")]
    CaWithoutTls,
}

/// How a service reaches its PostgreSQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DbTlsMode {
    /// Plain connections (a database on the same host or a private socket).
    #[default]
    Disable,
    /// TLS, the server's certificate checked against the CA (the CA file, or the
    /// system's roots) and its name against the host in the database URL.
    VerifyFull,
}

/// The TLS flags every service that talks to PostgreSQL takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DbTlsArgs {
    /// TLS to PostgreSQL: disable, or verify-full (encrypted, certificate and host name
    /// checked).
    #[arg(long = "database-tls", env = "LEDGER_DATABASE_TLS", value_enum, default_value_t = DbTlsMode::Disable)]
    pub mode: DbTlsMode,
    /// PEM file of the CA that signed the database's certificate (e.g. the RDS bundle);
    /// default with verify-full: the system's trusted roots.
    #[arg(long = "database-ca-file", env = "LEDGER_DATABASE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The TLS set-up of one service's database connections.
#[derive(Clone)]
pub struct DbTls {
    mode: DbTlsMode,
    connector: MakeRustlsConnect,
}

impl std::fmt::Debug for DbTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbTls").field("mode", &self.mode).finish()
    }
}

impl DbTls {
    pub fn new(args: &DbTlsArgs) -> Result<Self, DbTlsError> {
        let roots = match (args.mode, &args.ca_file) {
            (DbTlsMode::Disable, Some(_)) => return Err(DbTlsError::CaWithoutTls),
            // Never used: plain connections make no TLS handshake.
            (DbTlsMode::Disable, None) => rustls::RootCertStore::empty(),
            (DbTlsMode::VerifyFull, ca_file) => ledger_tls::roots(ca_file.as_deref())?,
        };
        Ok(DbTls {
            mode: args.mode,
            connector: MakeRustlsConnect::new(ledger_tls::client_config(roots)?),
        })
    }

    pub fn mode(&self) -> DbTlsMode {
        self.mode
    }

    /// Sets `config`'s TLS mode: required with verify-full (a server without TLS is
    /// refused, never silently used in plain text), off otherwise.
    pub fn configure(&self, config: &mut tokio_postgres::Config) {
        config.ssl_mode(match self.mode {
            DbTlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            DbTlsMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
    }

    pub fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_ca_file_needs_tls_and_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("db-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let with = |mode, ca_file: Option<&Path>| {
            DbTls::new(&DbTlsArgs {
                mode,
                ca_file: ca_file.map(Path::to_owned),
            })
        };
        assert!(matches!(
            with(DbTlsMode::Disable, Some(&empty)),
            Err(DbTlsError::CaWithoutTls)
        ));
        assert!(matches!(
            with(DbTlsMode::VerifyFull, Some(&empty)),
            Err(DbTlsError::Tls(ledger_tls::TlsError::NoCertificate(_)))
        ));
        assert!(matches!(
            with(DbTlsMode::VerifyFull, Some(&dir.join("missing.pem"))),
            Err(DbTlsError::Tls(ledger_tls::TlsError::File { .. }))
        ));
        let mut config = tokio_postgres::Config::new();
        with(DbTlsMode::Disable, None)
            .expect("plain connections")
            .configure(&mut config);
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
