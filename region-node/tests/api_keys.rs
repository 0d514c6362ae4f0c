//! The public API behind API keys, on the real binary and PostgreSQL: no key or an
//! unknown one is 401 with a bearer challenge, a key without the route's scope is 403,
//! a key over its rate is 429 with Retry-After while other keys go on, health,
//! metrics and the contract stay open, the contract states the rule, and a key revoked
//! in the file is refused within the reload interval.

use std::path::Path;
use std::time::Duration;

use harness::node::{region_node_command, start_region_node};
use harness::{free_port, wait_until, PgCluster, PgOptions, WorkDir};
use ledger_wire::api_keys::{generate, KeyFile, Scope};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn write_keys(path: &Path, keys: &KeyFile) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, serde_json::to_string(keys)?)?;
    std::fs::rename(temp, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scopes_rates_and_revocation_on_the_real_binary() -> TestResult {
    let dir = WorkDir::temp("node-api-keys")?;
    let pg = PgCluster::start(dir.path(), &PgOptions::default()).await?;
    let database_url = pg.create_database("ledger").await?;
    let (reader, reader_record) = generate("auditor", [Scope::Read].into(), "t0".into());
    let (writer, writer_record) = generate("bank", [Scope::Read, Scope::Write].into(), "t0".into());
    let (greedy, greedy_record) = generate("greedy", [Scope::Read].into(), "t0".into());
    let mut keys = KeyFile {
        keys: vec![reader_record, writer_record, greedy_record],
    };
    let key_file = dir.join("api-keys.json");
    write_keys(&key_file, &keys)?;

    let port = free_port()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_region-node"));
    let mut command = region_node_command(bin, "eu-west", &database_url, port);
    command
        .env("LEDGER_API_KEYS_FILE", &key_file)
        .env("LEDGER_API_RATE_PER_KEY", "2")
        .env("LEDGER_API_BURST_PER_KEY", "10");
    let _node = start_region_node(
        "region-node",
        command,
        port,
        &dir.join("node.log"),
        Duration::from_secs(30),
    )
    .await?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let open_account = |key: Option<&str>| {
        let mut request = http
            .post(format!("{base}/v1/accounts"))
            .header(
                "idempotency-key",
                format!("open-{}", key.map_or(0, str::len)),
            )
            .json(&serde_json::json!({ "currency": "EUR" }));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };

    // No key, a made-up key: 401 with a bearer challenge and the problem type.
    for key in [None, Some("lk_000000000000_nonsense")] {
        let answer = open_account(key).await?;
        assert_eq!(answer.status(), 401, "key {key:?}");
        assert!(answer.headers().contains_key("www-authenticate"));
        let problem: serde_json::Value = answer.json().await?;
        assert_eq!(problem["type"], "/problems/unauthorized");
    }
    // Read scope only: may read, may not write.
    let forbidden = open_account(Some(&reader)).await?;
    assert_eq!(forbidden.status(), 403);
    let problem: serde_json::Value = forbidden.json().await?;
    assert_eq!(problem["type"], "/problems/forbidden");
    // The writer opens an account and deposits; the reader reads it.
    let opened = open_account(Some(&writer)).await?;
    assert_eq!(opened.status(), 201);
    let account: serde_json::Value = opened.json().await?;
    let id = account["id"].as_str().ok_or("no account id")?.to_owned();
    let deposit = http
        .post(format!("{base}/v1/accounts/{id}/deposits"))
        .bearer_auth(&writer)
        .header("idempotency-key", "deposit-1")
        .json(&serde_json::json!({ "amount": "12.50" }))
        .send()
        .await?;
    assert_eq!(deposit.status(), 201);
    let read = http
        .get(format!("{base}/v1/accounts/{id}"))
        .bearer_auth(&reader)
        .send()
        .await?;
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<serde_json::Value>().await?["balance"], "12.50");

    // Open routes need no key.
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(
            http.get(format!("{base}{open}")).send().await?.status(),
            200,
            "{open}"
        );
    }

    // One key over its rate (2/s, burst 10) gets 429 with Retry-After; others go on.
    let mut limited = None;
    for _ in 0..20 {
        let answer = http
            .get(format!("{base}/v1/accounts/{id}"))
            .bearer_auth(&greedy)
            .send()
            .await?;
        if answer.status() == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status(), 200);
    }
    let limited = limited.ok_or("20 quick reads by one key were never limited")?;
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or("no Retry-After")?;
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        limited.json::<serde_json::Value>().await?["type"],
        "/problems/rate-limited"
    );
    let other = http
        .get(format!("{base}/v1/accounts/{id}"))
        .bearer_auth(&reader)
        .send()
        .await?;
    assert_eq!(other.status(), 200, "another key was limited too");

    // The contract states the rule.
    let doc: serde_json::Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["scheme"],
        "bearer"
    );
    let deposit_op = &doc["paths"]["/v1/accounts/{id}/deposits"]["post"];
    assert!(deposit_op["responses"]["401"].is_object(), "{deposit_op}");
    assert!(deposit_op["responses"]["429"].is_object());
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([])
    );

    // Revoked in the file: refused once the node reads it again (every 2 s).
    keys.keys[0].revoked_at = Some("t1".into());
    write_keys(&key_file, &keys)?;
    let refused = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let request = http
            .get(format!("{base}/v1/accounts/{id}"))
            .bearer_auth(&reader)
            .send();
        async move { (request.await.ok()?.status() == 401).then_some(()) }
    })
    .await;
    assert!(refused.is_some(), "a revoked key still reads after 10 s");

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for reason in ["missing", "unknown", "scope", "rate"] {
        assert!(
            metrics.contains(&format!(
                "ledger_api_key_refusals_total{{reason=\"{reason}\""
            )),
            "no {reason} refusal counted"
        );
    }
    Ok(())
}
