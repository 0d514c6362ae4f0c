//! The pinned client's rules against a fake transport: one attempt at its own region
//! whatever the answer, the key a write carried handed back, the `ack` passed on.

use std::sync::Mutex;
use std::time::Duration;

use ledger_client::{RawAnswer, RegionClient, Request, Transport, TransportFailure};
use ledger_wire::api_schema::AckMode;
use serde_json::json;

/// What one attempt carried: the URL, the Idempotency-Key, the `ack`.
type Call = (String, Option<String>, Option<AckMode>);

/// Answers every attempt with `status` (or fails to connect when `None`), and
/// remembers what it was sent.
struct Fake {
    status: Option<u16>,
    calls: Mutex<Vec<Call>>,
}

impl Fake {
    fn new(status: Option<u16>) -> Fake {
        Fake {
            status,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("the fake's lock").clone()
    }
}

impl Transport for &Fake {
    async fn send(
        &self,
        base_url: &str,
        request: &Request,
        key: Option<&str>,
        _timeout: Duration,
    ) -> Result<RawAnswer, TransportFailure> {
        self.calls.lock().expect("the fake's lock").push((
            base_url.to_owned(),
            key.map(str::to_owned),
            request.ack,
        ));
        match self.status {
            Some(status) => Ok(RawAnswer {
                status,
                forwarded_to: Some("us".into()),
                body: json!({"type": "/problems/home-unreachable"}),
                ..RawAnswer::default()
            }),
            None => Err(TransportFailure::Connect("refused".into())),
        }
    }
}

fn pinned(fake: &Fake) -> RegionClient<&Fake> {
    RegionClient::new(fake, "eu", "http://eu/", Duration::from_secs(1))
}

#[tokio::test]
async fn a_refused_write_is_sent_once_to_its_region_and_answered_as_given() {
    let fake = Fake::new(Some(503));
    let reply = pinned(&fake)
        .send(&Request::post("/v1/transfers", json!({})).with_key("k-1"))
        .await
        .expect("an answer");
    assert_eq!(reply.answer.status, 503);
    assert_eq!(reply.answer.problem(), "home-unreachable");
    assert_eq!(reply.answer.forwarded_to.as_deref(), Some("us"));
    assert_eq!(reply.idempotency_key.as_deref(), Some("k-1"));
    assert_eq!(
        fake.calls(),
        vec![("http://eu".to_owned(), Some("k-1".to_owned()), None)],
        "one attempt, at its own region, with the caller's key"
    );
}

#[tokio::test]
async fn a_write_without_a_key_gets_one_and_a_read_carries_none() {
    let fake = Fake::new(Some(201));
    let client = pinned(&fake);
    let write = client
        .send(&Request::post("/v1/accounts", json!({})).ack(AckMode::Replicated))
        .await
        .expect("an answer");
    let key = write.idempotency_key.expect("a fresh key");
    let read = client
        .send(&Request::get("/v1/accounts/a"))
        .await
        .expect("an answer");
    assert_eq!(read.idempotency_key, None);
    assert_eq!(
        fake.calls(),
        vec![
            ("http://eu".to_owned(), Some(key), Some(AckMode::Replicated)),
            ("http://eu".to_owned(), None, None),
        ]
    );
}

#[tokio::test]
async fn an_unreachable_region_is_reported_not_retried() {
    let fake = Fake::new(None);
    let failure = pinned(&fake)
        .send(&Request::get("/v1/accounts/a"))
        .await
        .expect_err("no answer");
    assert_eq!(failure, TransportFailure::Connect("refused".into()));
    assert_eq!(fake.calls().len(), 1);
}

#[test]
fn an_answer_without_a_problem_type_is_named_by_its_status() {
    let answer = RawAnswer {
        status: 502,
        body: json!("bad gateway"),
        ..RawAnswer::default()
    };
    assert_eq!(answer.problem(), "http-502");
}
