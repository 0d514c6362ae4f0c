//! The OpenAPI document served at /openapi.json describes every public route.

use ledger_tests::TestRegion;
use reqwest::StatusCode;

/// The public API (v1), the contract clients rely on: the design's route table and the
/// regions' discovery route (docs/api.md).
const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts/{id}"),
    ("post", "/v1/accounts/{id}/deposits"),
    ("post", "/v1/accounts/{id}/withdrawals"),
    ("post", "/v1/transfers"),
    ("get", "/v1/transfers/{id}"),
    ("get", "/v1/accounts/{id}/ledger"),
    ("get", "/v1/regions"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_public_route() -> anyhow::Result<()> {
    let region = TestRegion::start("openapi").await?;
    let reply = region.api.get("/openapi.json").await?;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json()?;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths object");
    for (method, path) in PUBLIC_ROUTES {
        let operation = &paths.get(*path).unwrap_or_else(|| panic!("{path} missing"))[*method];
        assert!(operation.is_object(), "{method} {path} missing");
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has no responses"
        );
    }
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        PUBLIC_ROUTES.len(),
        "no undocumented extras either"
    );

    // Writes declare the Idempotency-Key header; bodies and errors have schemas.
    let deposit = &paths["/v1/accounts/{id}/deposits"]["post"];
    let params = deposit["parameters"].as_array().expect("parameters");
    assert!(params
        .iter()
        .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"));
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "Account",
        "Entry",
        "Transfer",
        "LedgerPage",
        "Problem",
        "AmountRequest",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }

    // Every route in the document answers (none is documented but unrouted).
    for (method, path) in PUBLIC_ROUTES
        .iter()
        .filter(|(m, p)| *m == "get" && !p.contains('{'))
    {
        let reply = region.api.get(path).await?;
        assert_eq!(reply.status, StatusCode::OK, "{method} {path}");
    }
    let metrics = region.api.get("/metrics").await?.text();
    assert!(metrics.contains("ledger_http_requests_total"), "{metrics}");
    Ok(())
}
