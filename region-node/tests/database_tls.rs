//! The node reaches a PostgreSQL that takes the ledger database only over TLS (as a
//! managed database does): with `--database-tls verify-full` and the CA it serves and
//! writes, and its sessions are encrypted; without TLS, or trusting another CA, it
//! never gets a session (the two ways a misconfigured node must fail).

use std::path::Path;
use std::time::Duration;

use harness::node::{region_node_command, start_region_node};
use harness::tls::make_certificates;
use harness::{free_port, wait_until, ChildGuard, PgCluster, PgOptions, PgTls, WorkDir};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn node_command(database_url: &str, port: u16, tls: &[(&str, &Path)]) -> std::process::Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_region-node"));
    let mut command = region_node_command(bin, "eu-west", database_url, port);
    for (name, value) in tls {
        command.env(name, value);
    }
    command
}

/// Starts a node that must fail to reach its database: waits until it exits and
/// returns its log.
async fn failed_start(
    dir: &WorkDir,
    name: &str,
    command: std::process::Command,
) -> Result<String, Box<dyn std::error::Error>> {
    let log = dir.join(&format!("{name}.log"));
    dir.allow_log_errors("database");
    let mut node = ChildGuard::spawn(name, command, &log, nix::sys::signal::Signal::SIGTERM)?;
    // The node retries its database for a minute at start; a refusal shows in its log
    // at the first attempt.
    let said = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::future::ready((text.contains("database") && node.exited().is_none()).then_some(text))
    })
    .await;
    said.ok_or_else(|| format!("{name} logged nothing about its database").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_over_verified_tls_and_never_in_plain_text() -> TestResult {
    let dir = WorkDir::temp("node-database-tls")?;
    let certificates = make_certificates(&dir.join("certs"))?;
    let options = PgOptions {
        tls: Some(PgTls {
            cert_file: certificates.server_cert.clone(),
            key_file: certificates.server_key.clone(),
            required_for: Some("ledger".into()),
        }),
        ..PgOptions::default()
    };
    let pg = PgCluster::start(dir.path(), &options).await?;
    let database_url = pg.create_database("ledger").await?;

    // Plain text: refused by the server.
    let plain = failed_start(
        &dir,
        "node-plain",
        node_command(&database_url, free_port()?, &[]),
    )
    .await?;
    assert!(
        plain.contains("no encryption") || plain.contains("rejects connection"),
        "{plain}"
    );

    // TLS, but trusting another CA: refused by the node.
    let strangers = make_certificates(&dir.join("other-certs"))?;
    let wrong_ca = node_command(
        &database_url,
        free_port()?,
        &[
            ("LEDGER_DATABASE_TLS", Path::new("verify-full")),
            ("LEDGER_DATABASE_CA_FILE", &strangers.ca_cert),
        ],
    );
    let refused = failed_start(&dir, "node-wrong-ca", wrong_ca).await?;
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    // TLS with the right CA: it migrates, serves a write, and every session it holds on
    // the ledger database is encrypted.
    let port = free_port()?;
    let command = node_command(
        &database_url,
        port,
        &[
            ("LEDGER_DATABASE_TLS", Path::new("verify-full")),
            ("LEDGER_DATABASE_CA_FILE", &certificates.ca_cert),
        ],
    );
    let _node = start_region_node(
        "node-tls",
        command,
        port,
        &dir.join("node-tls.log"),
        Duration::from_secs(30),
    )
    .await?;
    let opened = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/accounts"))
        .header("idempotency-key", "tls-open")
        .json(&serde_json::json!({ "currency": "EUR" }))
        .send()
        .await?;
    assert_eq!(opened.status(), 201);
    let (admin, connection) =
        tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'ledger'",
            &[],
        )
        .await?;
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(encrypted >= 1, "no encrypted session of the node");
    assert_eq!(plain, 0, "a plain session reached the ledger database");
    Ok(())
}
