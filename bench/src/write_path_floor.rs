//! `write-path-floor`: the least an HTTP front of the write path's SQL can do, to measure
//! against. One hyper HTTP/1 server and a pool of PostgreSQL connections; per request it
//! reads the account id from the path, the Idempotency-Key and `traceparent` from the
//! headers and the amount from the JSON body, runs the node's `POST_ENTRY_SQL` (a
//! withdrawal at epoch 1 for region `bench`, like the benchmark's pgbench script) and
//! answers the function's status and body. No router, middleware, metrics, tracing,
//! ownership or fingerprint hashing.
//!
//! Run it as `write-path-bench --compare-node target/release/write-path-floor`: it takes
//! the node's `LEDGER_LISTEN`, `LEDGER_DATABASE_URL` and `LEDGER_DB_POOL_SIZE` and answers
//! `/readyz`. It uses the schema and the slot leases (epoch 1) the bench's own node has
//! already put in that database. The node's distance from it is what the node's own
//! code costs; its distance from pgbench is what any HTTP process in front of
//! PostgreSQL costs on this machine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::Context;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use ledger_wire::AccountId;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_postgres::NoTls;

/// Stands in for the node's SHA-256 of the request (the benchmark's keys never repeat).
const FINGERPRINT: [u8; 32] = [0xab; 32];

#[derive(serde::Deserialize)]
struct Withdrawal {
    amount: Decimal,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::var("LEDGER_LISTEN")
        .context("LEDGER_LISTEN is required")?
        .parse()
        .context("parse LEDGER_LISTEN")?;
    let database_url = std::env::var("LEDGER_DATABASE_URL").context("LEDGER_DATABASE_URL")?;
    let pool_size = match std::env::var("LEDGER_DB_POOL_SIZE") {
        Ok(size) => size.parse().context("parse LEDGER_DB_POOL_SIZE")?,
        Err(_) => 16,
    };
    let pg: tokio_postgres::Config = database_url.parse().context("parse the database url")?;
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(pool_size)
        .runtime(Runtime::Tokio1)
        .build()
        .context("build the database pool")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let mut terminate = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted.context("accept a connection")?,
            _ = terminate.recv() => return Ok(()),
        };
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(pool.clone(), request));
            // A client that hangs up ends its connection; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    pool: Pool,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/readyz") => (200, "ready".to_owned()),
        (&Method::POST, path) if path.ends_with("/withdrawals") => withdraw(&pool, request)
            .await
            .unwrap_or_else(|error| (500, format!("{error:#}"))),
        _ => (404, "no such route".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn withdraw(pool: &Pool, request: Request<Incoming>) -> anyhow::Result<(u16, String)> {
    let id = request
        .uri()
        .path()
        .strip_prefix("/v1/accounts/")
        .and_then(|rest| rest.strip_suffix("/withdrawals"))
        .context("path")?;
    let account = AccountId::from_str(id).map_err(|e| anyhow::anyhow!("account id: {e}"))?;
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key = header("idempotency-key").context("Idempotency-Key")?;
    let traceparent = header("traceparent");
    let body = request.into_body().collect().await?.to_bytes();
    let withdrawal: Withdrawal = serde_json::from_slice(&body).context("body")?;
    let client = pool.get().await?;
    let statement = client.prepare_cached(region_node::POST_ENTRY_SQL).await?;
    let row = client
        .query_one(
            &statement,
            &[
                &key,
                &FINGERPRINT.as_slice(),
                &"withdrawal",
                &account.as_i64(),
                &withdrawal.amount,
                &None::<&str>,
                &1_i64,
                &"bench",
                &traceparent,
            ],
        )
        .await?;
    let status: i32 = row.try_get(0)?;
    Ok((u16::try_from(status)?, row.try_get(1)?))
}
