//! Every kind of bad input gets its problem document and changes nothing.

use ledger_tests::db::snapshot;
use ledger_tests::TestRegion;
use ledger_wire::AccountId;
use reqwest::{Method, StatusCode};

/// One bad request: what is sent and what must come back.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    key: Option<String>,
    content_type: Option<&'static str>,
    body: Option<String>,
    status: u16,
    problem: &'static str,
}

fn post(name: &'static str, path: String, body: &str, status: u16, problem: &'static str) -> Case {
    Case {
        name,
        method: Method::POST,
        path,
        key: Some(uuid::Uuid::new_v4().to_string()),
        content_type: Some("application/json"),
        body: Some(body.to_owned()),
        status,
        problem,
    }
}

fn get(name: &'static str, path: String, status: u16, problem: &'static str) -> Case {
    Case {
        name,
        method: Method::GET,
        path,
        key: None,
        content_type: None,
        body: None,
        status,
        problem,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_problem_and_changes_nothing() -> anyhow::Result<()> {
    let region = TestRegion::start("bad-input").await?;
    let api = &region.api;
    let eur = api.open_account("EUR").await?;
    let usd = api.open_account("USD").await?;
    let yen = api.open_account("JPY").await?;
    api.fund(eur.id, "10.00").await?;
    api.fund(usd.id, "10.00").await?;
    let unknown = AccountId::new(eur.id.slot(), eur.id.local() ^ 1)?;
    let deposits = format!("/v1/accounts/{}/deposits", eur.id);
    let withdrawals = format!("/v1/accounts/{}/withdrawals", eur.id);
    let transfer = |from: AccountId, to: AccountId, amount: &str| {
        format!(r#"{{"from":"{from}","to":"{to}","amount":"{amount}"}}"#)
    };

    let mut cases = vec![
        post(
            "malformed JSON",
            deposits.clone(),
            r#"{"amount": "1.00""#,
            400,
            "malformed-json",
        ),
        post(
            "zero amount",
            deposits.clone(),
            r#"{"amount":"0"}"#,
            422,
            "invalid-amount",
        ),
        post(
            "negative amount",
            deposits.clone(),
            r#"{"amount":"-5.00"}"#,
            422,
            "invalid-amount",
        ),
        post(
            "amount not a number",
            deposits.clone(),
            r#"{"amount":"ten"}"#,
            422,
            "invalid-amount",
        ),
        post(
            "amount with exponent",
            deposits.clone(),
            r#"{"amount":"1e3"}"#,
            422,
            "invalid-amount",
        ),
        post(
            "amount as JSON number",
            deposits.clone(),
            r#"{"amount":5}"#,
            422,
            "invalid-body",
        ),
        post(
            "too many decimals",
            deposits.clone(),
            r#"{"amount":"1.234"}"#,
            422,
            "amount-scale",
        ),
        post(
            "decimals on a currency without minor units",
            format!("/v1/accounts/{}/deposits", yen.id),
            r#"{"amount":"1.5"}"#,
            422,
            "amount-scale",
        ),
        post(
            "amount above the maximum",
            deposits.clone(),
            r#"{"amount":"1000000000.01"}"#,
            422,
            "amount-too-large",
        ),
        post(
            "unknown field",
            deposits.clone(),
            r#"{"amount":"1.00","ammount":"2"}"#,
            422,
            "invalid-body",
        ),
        post(
            "missing field",
            deposits.clone(),
            r#"{}"#,
            422,
            "invalid-body",
        ),
        post(
            "reference too long",
            deposits.clone(),
            &format!(r#"{{"amount":"1.00","reference":"{}"}}"#, "x".repeat(141)),
            422,
            "invalid-body",
        ),
        post(
            "a NUL in a reference (PostgreSQL text cannot hold one: was a 500)",
            deposits.clone(),
            r#"{"amount":"1.00","reference":"a\u0000b"}"#,
            422,
            "invalid-body",
        ),
        post(
            "unknown currency",
            "/v1/accounts".into(),
            r#"{"currency":"XXX"}"#,
            422,
            "unknown-currency",
        ),
        post(
            "lower-case currency",
            "/v1/accounts".into(),
            r#"{"currency":"eur"}"#,
            422,
            "unknown-currency",
        ),
        post(
            "home region not in the deployment",
            "/v1/accounts".into(),
            r#"{"currency":"EUR","home_region":"mars-1"}"#,
            422,
            "unknown-region",
        ),
        post(
            "currency mismatch",
            "/v1/transfers".into(),
            &transfer(eur.id, usd.id, "1.00"),
            422,
            "currency-mismatch",
        ),
        post(
            "same account transfer",
            "/v1/transfers".into(),
            &transfer(eur.id, eur.id, "1.00"),
            422,
            "same-account-transfer",
        ),
        post(
            "transfer from unknown account",
            "/v1/transfers".into(),
            &transfer(unknown, eur.id, "1.00"),
            404,
            "account-not-found",
        ),
        post(
            "transfer to unknown account",
            "/v1/transfers".into(),
            &transfer(eur.id, unknown, "1.00"),
            404,
            "account-not-found",
        ),
        post(
            "deposit to unknown account",
            format!("/v1/accounts/{unknown}/deposits"),
            r#"{"amount":"1.00"}"#,
            404,
            "account-not-found",
        ),
        post(
            "malformed account id",
            "/v1/accounts/nope/deposits".into(),
            r#"{"amount":"1.00"}"#,
            400,
            "invalid-parameter",
        ),
        post(
            "oversized body",
            deposits.clone(),
            &format!(
                r#"{{"amount":"1.00","reference":"{}"}}"#,
                "x".repeat(64 * 1024)
            ),
            413,
            "payload-too-large",
        ),
        get(
            "unknown account",
            format!("/v1/accounts/{unknown}"),
            404,
            "account-not-found",
        ),
        get(
            "slot outside the deployment",
            "/v1/accounts/ac_7fff_000000000001".into(),
            404,
            "account-not-found",
        ),
        get(
            "ledger of unknown account",
            format!("/v1/accounts/{unknown}/ledger"),
            404,
            "account-not-found",
        ),
        get(
            "ledger limit zero",
            format!("/v1/accounts/{}/ledger?limit=0", eur.id),
            400,
            "invalid-parameter",
        ),
        get(
            "ledger limit too large",
            format!("/v1/accounts/{}/ledger?limit=501", eur.id),
            400,
            "invalid-parameter",
        ),
        get(
            "ledger cursor garbage",
            format!("/v1/accounts/{}/ledger?cursor=abc", eur.id),
            400,
            "invalid-parameter",
        ),
        get(
            "transfer id not a UUID",
            "/v1/transfers/123".into(),
            400,
            "invalid-parameter",
        ),
        get("unknown route", "/v1/nothing-here".into(), 404, "not-found"),
    ];
    let mut no_key = post(
        "missing Idempotency-Key",
        deposits.clone(),
        r#"{"amount":"1.00"}"#,
        400,
        "missing-idempotency-key",
    );
    no_key.key = None;
    let mut long_key = post(
        "Idempotency-Key too long",
        deposits.clone(),
        r#"{"amount":"1.00"}"#,
        400,
        "invalid-idempotency-key",
    );
    long_key.key = Some("k".repeat(256));
    let mut text_body = post(
        "body not JSON content",
        deposits.clone(),
        r#"{"amount":"1.00"}"#,
        415,
        "unsupported-media-type",
    );
    text_body.content_type = Some("text/plain");
    let mut wrong_method = get(
        "wrong method",
        withdrawals.clone(),
        405,
        "method-not-allowed",
    );
    wrong_method.method = Method::DELETE;
    cases.extend([no_key, long_key, text_body, wrong_method]);

    let db = region.db().await?;
    let before = snapshot(&db).await?;
    let client = reqwest::Client::new();
    for case in &cases {
        let mut request =
            client.request(case.method.clone(), format!("{}{}", api.base(), case.path));
        if let Some(key) = &case.key {
            request = request.header("idempotency-key", key);
        }
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = &case.body {
            request = request.body(body.clone());
        }
        let response = request.send().await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await?;
        assert_eq!(
            status,
            StatusCode::from_u16(case.status)?,
            "{}: {text}",
            case.name
        );
        assert_eq!(content_type, "application/problem+json", "{}", case.name);
        let problem: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(
            problem["type"],
            format!("/problems/{}", case.problem),
            "{}: {text}",
            case.name
        );
        assert_eq!(problem["status"], case.status, "{}", case.name);
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            case.name
        );
        assert_eq!(
            snapshot(&db).await?,
            before,
            "{} changed the ledger",
            case.name
        );
    }

    // An overdraft is refused and books nothing; only its answer is kept for retries.
    let overdraft = api.withdraw(eur.id, "10.01", "overdraft-key").await?;
    assert_eq!(overdraft.status, StatusCode::CONFLICT);
    assert_eq!(overdraft.problem_type(), "/problems/insufficient-funds");
    let after = snapshot(&db).await?;
    assert_eq!(after.idempotency_keys, before.idempotency_keys + 1);
    assert_eq!(
        ledger_tests::db::LedgerSnapshot {
            idempotency_keys: before.idempotency_keys,
            ..after
        },
        before
    );
    Ok(())
}
