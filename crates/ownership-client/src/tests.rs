//! Which failures send a request on to the next voter: two fake voters on loopback,
//! one answering as a follower whose leader went silent (or taking the request and
//! closing without an answer, as a dead voter behind a TCP proxy does), one serving. (The same path
//! on real voters behind a partition: `chaos::partitions`, whose partitioned region
//! is the Raft leader's.)

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{ClientError, OwnershipClient};

/// What a follower answers when the leader it forwarded to never answered.
async fn leader_silent() -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"code": "outcome_unknown", "message": "no answer from leader 2"})),
    )
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("local address").to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

async fn follower_then_serving_voter() -> OwnershipClient {
    let follower = serve(
        Router::new()
            .route("/v1/history", get(leader_silent))
            .route("/v1/commands", post(leader_silent)),
    )
    .await;
    let serving =
        serve(Router::new().route("/v1/history", get(|| async { Json(json!([])) }))).await;
    OwnershipClient::new(vec![follower, serving], "test", "0123456789abcdef")
        .expect("client")
        .with_retry_for(Duration::ZERO)
}

#[tokio::test]
async fn a_read_whose_leader_went_silent_is_served_by_another_voter() {
    let client = follower_then_serving_voter().await;
    let changes = client
        .history(0, 10)
        .await
        .expect("the second voter serves");
    assert!(changes.is_empty());
}

#[tokio::test]
async fn a_command_whose_leader_went_silent_is_reported_unknown_not_retried() {
    let client = follower_then_serving_voter().await;
    let answer = client.set_region("eu-west", Some(1), None, "test").await;
    assert!(
        matches!(answer, Err(ClientError::OutcomeUnknown(_))),
        "{answer:?}"
    );
}

/// A voter that takes the request and closes the connection without answering: what a
/// dead voter looks like through a region's TCP proxy.
async fn lost_answers() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("local address").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0_u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
        }
    });
    address
}

/// A voter that grants every command a lease.
async fn granting() -> String {
    let grant = ledger_wire::ownership::Outcome::Lease(ledger_wire::ownership::LeaseGrant {
        region: "eu-west".to_owned(),
        map_version: 1,
        ttl_ms: 2_000,
        granted_at_ms: 1,
        slots: Vec::new(),
        accounts: Vec::new(),
        accounts_away: Vec::new(),
    });
    let body = serde_json::to_value(grant).expect("encode a grant");
    serve(Router::new().route(
        "/v1/commands",
        post(move || {
            let body = body.clone();
            async move { Json(body) }
        }),
    ))
    .await
}

async fn lost_then_granting_voter() -> OwnershipClient {
    OwnershipClient::new(
        vec![lost_answers().await, granting().await],
        "test",
        "0123456789abcdef",
    )
    .expect("client")
    .with_retry_for(Duration::ZERO)
}

#[tokio::test]
async fn a_renewal_whose_answer_was_lost_goes_on_to_the_next_voter() {
    let client = lost_then_granting_voter().await;
    let grant = client
        .renew_lease("eu-west")
        .await
        .expect("the second voter grants it");
    assert_eq!(grant.ttl_ms, 2_000);
}

#[tokio::test]
async fn after_a_lost_answer_the_next_command_starts_at_the_next_voter() {
    let client = lost_then_granting_voter().await;
    // Not repeatable: its outcome is unknown, and it is not sent again.
    let first = client.set_region("eu-west", Some(1), None, "test").await;
    assert!(
        matches!(first, Err(ClientError::OutcomeUnknown(_))),
        "{first:?}"
    );
    // Starting again at the voter that lost it would fail the same way.
    let second = client.set_region("eu-west", Some(1), None, "test").await;
    assert!(second.is_ok(), "{second:?}");
}
