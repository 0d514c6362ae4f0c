//! Which failures send a request on to the next voter: two fake voters on loopback,
//! one answering as a follower whose leader went silent, one serving. (The same path
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
