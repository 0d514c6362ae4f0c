//! The node serving HTTPS on its listener (`LEDGER_TLS_CERT_FILE`/`_KEY_FILE`), real
//! binary and PostgreSQL: a client trusting the node's CA writes and reads through the
//! public API, and a signed internal call (what peers and the failover tool send) goes
//! through the same TLS listener; plain HTTP and a client trusting another CA get
//! nothing.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use harness::node::region_node_command;
use harness::tls::make_certificates;
use harness::{free_port, wait_until, ChildGuard, PgCluster, PgOptions, WorkDir};
use internal_api::SignedCaller;
use nix::sys::signal::Signal;
use reqwest::Method;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SECRET: &str = "listener-tls-test-secret";

fn client_trusting(ca: &Path) -> Result<reqwest::Client, Box<dyn std::error::Error>> {
    let tls = ledger_tls::client_config(ledger_tls::roots(Some(ca))?)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .build()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_https_to_clients_and_signed_callers_that_trust_its_ca() -> TestResult {
    let dir = WorkDir::temp("node-listener-tls")?;
    let certificates = make_certificates(&dir.join("certs"))?;
    let pg = PgCluster::start(dir.path(), &PgOptions::default()).await?;
    let database_url = pg.create_database("ledger").await?;

    let port = free_port()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_region-node"));
    let mut command = region_node_command(bin, "eu-west", &database_url, port);
    command
        .env("LEDGER_TLS_CERT_FILE", &certificates.server_cert)
        .env("LEDGER_TLS_KEY_FILE", &certificates.server_key)
        .env("LEDGER_INTERNAL_SECRET", SECRET);
    let _node = ChildGuard::spawn(
        "region-node",
        command,
        &dir.join("node.log"),
        Signal::SIGTERM,
    )?;

    let base = format!("https://localhost:{port}");
    let trusting = client_trusting(&certificates.ca_cert)?;
    let ready = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let request = trusting.get(format!("{base}/readyz")).send();
        async move { (request.await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    assert!(
        ready.is_some(),
        "the node never answered /readyz over HTTPS"
    );

    // The public API over HTTPS.
    let opened = trusting
        .post(format!("{base}/v1/accounts"))
        .header("idempotency-key", "tls-open")
        .json(&serde_json::json!({ "currency": "EUR" }))
        .send()
        .await?;
    assert_eq!(opened.status(), 201);
    let account: serde_json::Value = opened.json().await?;
    let id = account["id"].as_str().ok_or("no account id")?.to_owned();

    // A signed internal call through the same listener, as a peer or the tool sends it.
    let caller = SignedCaller::new(
        "us-east",
        SECRET,
        [("eu-west".to_owned(), base.clone())],
        Duration::from_secs(1),
    )?
    .with_tls(ledger_tls::client_config(ledger_tls::roots(Some(
        &certificates.ca_cert,
    ))?)?)?;
    let answer = caller
        .call(
            "eu-west",
            Method::GET,
            &format!("/v1/accounts/{id}"),
            Vec::new(),
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await?;
    assert_eq!(answer.status, 200, "{}", answer.detail());

    // Plain HTTP gets no answer, and a client trusting another CA refuses the node.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP was served: {plain:?}"
    );
    let strangers = make_certificates(&dir.join("other-certs"))?;
    let refused = client_trusting(&strangers.ca_cert)?
        .get(format!("{base}/readyz"))
        .send()
        .await;
    assert!(refused.is_err(), "a client trusting another CA was served");
    Ok(())
}
