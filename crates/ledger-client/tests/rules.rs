//! The client's rules against a fake transport: where requests go, when they move to
//! another region, that every attempt of a write carries the same Idempotency-Key, and
//! that the budget bounds it all.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ledger_client::{
    Breaker, Client, ClientError, RawAnswer, Request, RetryConfig, RoutingConfig, Transport,
    TransportFailure,
};
use serde_json::json;

/// What a fake region does with one attempt.
#[derive(Debug, Clone)]
enum Step {
    /// Answer with this status after this long.
    Answer(u16, Duration),
    /// Rate limited: 429 with this Retry-After.
    Limited(Duration),
    /// Make the write (it counts) but never answer: the client's attempt times out.
    ApplyThenTimeout,
    /// Refuse the connection.
    Down,
}

/// Regions `eu`, `us`, `ap` whose next steps are scripted (then `default`); writes are
/// made once per Idempotency-Key, as the real ledger does.
#[derive(Debug, Default)]
struct Fake {
    scripts: Mutex<HashMap<String, VecDeque<Step>>>,
    defaults: Mutex<HashMap<String, Step>>,
    calls: Mutex<Vec<(String, Option<String>)>>,
    applied: Mutex<HashSet<String>>,
    /// The home region every write's answer names (`x-home-region`).
    home: Mutex<Option<String>>,
}

impl Fake {
    fn set_default(&self, region: &str, step: Step) {
        self.defaults
            .lock()
            .expect("the fake's lock")
            .insert(region.into(), step);
    }
    fn script(&self, region: &str, steps: Vec<Step>) {
        self.scripts
            .lock()
            .expect("the fake's lock")
            .insert(region.into(), steps.into());
    }
    fn calls(&self) -> Vec<(String, Option<String>)> {
        self.calls.lock().expect("the fake's lock").clone()
    }
    fn regions_called(&self) -> Vec<String> {
        self.calls().into_iter().map(|(r, _)| r).collect()
    }
}

impl Transport for &Fake {
    async fn send(
        &self,
        base_url: &str,
        _request: &Request,
        key: Option<&str>,
        timeout: Duration,
    ) -> Result<RawAnswer, TransportFailure> {
        let region = base_url.trim_start_matches("http://").to_owned();
        self.calls
            .lock()
            .expect("the fake's lock")
            .push((region.clone(), key.map(str::to_owned)));
        let step = self
            .scripts
            .lock()
            .expect("the fake's lock")
            .get_mut(&region)
            .and_then(VecDeque::pop_front)
            .or_else(|| {
                self.defaults
                    .lock()
                    .expect("the fake's lock")
                    .get(&region)
                    .cloned()
            })
            .unwrap_or(Step::Answer(201, Duration::ZERO));
        let apply = || {
            let replayed = match key {
                Some(key) => !self
                    .applied
                    .lock()
                    .expect("the fake's lock")
                    .insert(key.to_owned()),
                None => false,
            };
            RawAnswer {
                status: 201,
                retry_after: None,
                served_by: Some(region.clone()),
                home: self.home.lock().expect("the fake's lock").clone(),
                replayed,
                // An open's answer names the account as `id` (other writes' answers
                // name their entry there; the client only reads it after an open).
                body: json!({"id": "acc-1", "account_id": "acc-1", "seq": 7}),
                ..RawAnswer::default()
            }
        };
        match step {
            Step::Answer(status, after) => {
                // The fake region's distance: the client measures it.
                tokio::time::sleep(after).await;
                if status == 201 {
                    return Ok(apply());
                }
                Ok(RawAnswer {
                    status,
                    retry_after: None,
                    served_by: Some(region),
                    home: None,
                    replayed: false,
                    body: json!({"status": status}),
                    ..RawAnswer::default()
                })
            }
            Step::Limited(after) => Ok(RawAnswer {
                status: 429,
                retry_after: Some(after),
                served_by: Some(region),
                home: None,
                replayed: false,
                body: json!({"status": 429}),
                ..RawAnswer::default()
            }),
            Step::ApplyThenTimeout => {
                apply();
                tokio::time::sleep(timeout).await;
                Err(TransportFailure::Timeout)
            }
            Step::Down => Err(TransportFailure::Connect("refused".into())),
        }
    }
}

fn client(fake: &Fake, retry: RetryConfig) -> Client<&Fake> {
    Client::new(
        fake,
        ["eu", "us", "ap"]
            .iter()
            .map(|n| (n.to_string(), format!("http://{n}")))
            .collect(),
        RoutingConfig::default(),
        retry,
    )
}

fn quick_retry() -> RetryConfig {
    RetryConfig {
        budget: Duration::from_secs(2),
        attempt_timeout: Duration::from_millis(200),
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

fn deposit() -> Request {
    Request::post("/v1/accounts/acc-1/deposits", json!({"amount": "1.00"}))
}

/// Three reads, answered (the first ones measure the regions).
async fn three_reads(client: &Client<&Fake>) {
    for _ in 0..3 {
        client
            .send(Request::get("/v1/accounts/acc-1"))
            .await
            .expect("an answer");
    }
}

/// Five reads, each answered by its first attempt; the regions they went to.
async fn five_reads_answered_at_once(client: &Client<&Fake>, fake: &Fake) -> Vec<String> {
    let before = fake.calls().len();
    for _ in 0..5 {
        let answer = client
            .send(Request::get("/v1/accounts/acc-1"))
            .await
            .expect("an answer");
        assert_eq!(answer.attempts, 1);
    }
    fake.regions_called().split_off(before)
}

#[tokio::test]
async fn requests_settle_on_the_nearest_region() {
    let fake = Fake::default();
    fake.set_default("eu", Step::Answer(201, Duration::from_millis(30)));
    fake.set_default("us", Step::Answer(201, Duration::from_millis(2)));
    fake.set_default("ap", Step::Answer(201, Duration::from_millis(60)));
    let client = client(&fake, quick_retry());
    // The first requests measure every region (an unknown latency goes first).
    three_reads(&client).await;
    let later = five_reads_answered_at_once(&client, &fake).await;
    assert!(later.iter().all(|r| r == "us"), "{later:?}");
}

#[tokio::test]
async fn an_unavailable_region_sends_the_write_on_with_the_same_key() {
    let fake = Fake::default();
    fake.script("eu", vec![Step::Answer(503, Duration::ZERO)]);
    fake.script("us", vec![Step::Answer(503, Duration::ZERO)]);
    fake.script("ap", vec![Step::Answer(503, Duration::ZERO)]);
    let client = client(&fake, quick_retry());
    let answer = client
        .send(deposit().with_key("dep-1"))
        .await
        .expect("an answer");
    assert_eq!(answer.status, 201);
    assert_eq!(
        answer.attempts, 4,
        "three 503s, then the first region again"
    );
    let calls = fake.calls();
    let regions: HashSet<&str> = calls[..3].iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        regions.len(),
        3,
        "each region once before any twice: {calls:?}"
    );
    assert!(calls.iter().all(|(_, key)| key.as_deref() == Some("dep-1")));
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_made_once() {
    let fake = Fake::default();
    for region in ["eu", "us", "ap"] {
        fake.script(region, vec![Step::ApplyThenTimeout]);
    }
    // Every region's first attempt applies and times out; the fourth attempt answers.
    let client = client(&fake, quick_retry());
    let answer = client.send(deposit()).await.expect("an answer");
    assert_eq!(answer.status, 201);
    assert!(answer.replayed, "the answer is the stored one");
    let keys: HashSet<Option<String>> = fake.calls().into_iter().map(|(_, k)| k).collect();
    assert_eq!(keys.len(), 1, "one key for every attempt: {keys:?}");
    assert_eq!(
        fake.applied.lock().expect("the fake's lock").len(),
        1,
        "made once"
    );
}

#[tokio::test]
async fn the_ledgers_refusals_are_not_retried() {
    let fake = Fake::default();
    for status in [409, 422] {
        fake.script("eu", vec![Step::Answer(status, Duration::ZERO)]);
        fake.script("us", vec![Step::Answer(status, Duration::ZERO)]);
        fake.script("ap", vec![Step::Answer(status, Duration::ZERO)]);
        let client = client(&fake, quick_retry());
        let before = fake.calls().len();
        let answer = client.send(deposit()).await.expect("an answer");
        assert_eq!((answer.status, answer.attempts), (status, 1));
        assert_eq!(fake.calls().len(), before + 1);
    }
}

#[tokio::test]
async fn a_rate_limit_is_waited_out_at_the_same_region() {
    let fake = Fake::default();
    let wait = Duration::from_millis(50);
    fake.script("eu", vec![Step::Limited(wait), Step::Limited(wait)]);
    fake.script("us", vec![Step::Limited(wait), Step::Limited(wait)]);
    fake.script("ap", vec![Step::Limited(wait), Step::Limited(wait)]);
    let client = client(&fake, quick_retry());
    let started = Instant::now();
    let answer = client.send(deposit()).await.expect("an answer");
    assert_eq!((answer.status, answer.attempts), (201, 3));
    assert!(started.elapsed() >= wait * 2, "Retry-After honoured twice");
    let regions = fake.regions_called();
    assert!(
        regions.iter().all(|r| r == &regions[0]),
        "never sprayed: {regions:?}"
    );
}

#[tokio::test]
async fn the_budget_bounds_a_request_no_region_can_serve() {
    let fake = Fake::default();
    for region in ["eu", "us", "ap"] {
        fake.set_default(region, Step::Down);
    }
    let retry = RetryConfig {
        budget: Duration::from_millis(300),
        ..quick_retry()
    };
    let client = client(&fake, retry);
    let started = Instant::now();
    let error = client
        .send(deposit())
        .await
        .expect_err("no region can serve");
    let elapsed = started.elapsed();
    // The budget plus one last attempt's slack, with room for a loaded machine.
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
    match error {
        ClientError::Exhausted { attempts, last, .. } => {
            assert!(attempts >= 3, "{attempts}");
            assert!(last.contains("Connect"), "{last}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_failing_region_is_left_alone_once_its_breaker_opens() {
    let fake = Fake::default();
    fake.set_default("eu", Step::Answer(201, Duration::ZERO));
    fake.set_default("us", Step::Answer(201, Duration::from_millis(20)));
    fake.set_default("ap", Step::Answer(201, Duration::from_millis(40)));
    let client = client(&fake, quick_retry());
    three_reads(&client).await;
    // eu, the nearest, goes down: three failures open its breaker.
    fake.set_default("eu", Step::Down);
    three_reads(&client).await;
    let state = client.regions();
    assert!(
        matches!(state[0].breaker, Breaker::Open { .. }),
        "{state:?}"
    );
    let later = five_reads_answered_at_once(&client, &fake).await;
    assert!(later.iter().all(|r| r != "eu"), "{later:?}");
}

#[tokio::test]
async fn reads_carry_the_last_written_seq() {
    let fake = Fake::default();
    let client = client(&fake, quick_retry());
    assert_eq!(client.min_seq("acc-1"), None);
    client.send(deposit()).await.expect("an answer");
    assert_eq!(client.min_seq("acc-1"), Some(7));
}

#[tokio::test]
async fn probes_win_back_a_region_that_was_slow_once() {
    let fake = Fake::default();
    // eu's first answer is slow (a cold connection), every later one fast.
    fake.script("eu", vec![Step::Answer(201, Duration::from_millis(60))]);
    fake.set_default("eu", Step::Answer(201, Duration::ZERO));
    fake.set_default("us", Step::Answer(201, Duration::from_millis(10)));
    fake.set_default("ap", Step::Answer(201, Duration::from_millis(40)));
    let client = client(&fake, quick_retry());
    three_reads(&client).await;
    assert_eq!(client.nearest().as_deref(), Some("us"), "eu looked slow");
    for _ in 0..10 {
        client.probe_all().await;
    }
    let later = five_reads_answered_at_once(&client, &fake).await;
    assert!(later.iter().all(|r| r == "eu"), "{later:?}");
}

#[tokio::test]
async fn a_probe_that_fails_counts_against_the_region_and_one_that_answers_closes_it() {
    let fake = Fake::default();
    fake.set_default("eu", Step::Down);
    let client = client(&fake, quick_retry());
    for _ in 0..3 {
        client.probe_all().await;
    }
    assert!(matches!(client.regions()[0].breaker, Breaker::Open { .. }));
    fake.set_default("eu", Step::Answer(201, Duration::ZERO));
    client.probe_all().await;
    assert_eq!(client.regions()[0].breaker, Breaker::Closed { failures: 0 });
}

#[tokio::test]
async fn a_home_aware_client_sends_writes_straight_to_the_home_it_learned() {
    let fake = Fake::default();
    *fake.home.lock().expect("the fake's lock") = Some("ap".to_owned());
    fake.set_default("eu", Step::Answer(201, Duration::ZERO));
    fake.set_default("us", Step::Answer(201, Duration::from_millis(10)));
    fake.set_default("ap", Step::Answer(201, Duration::from_millis(40)));
    let body = ledger_wire::api::AmountRequest {
        amount: "1.00".to_owned(),
        reference: None,
    };
    for home_aware in [false, true] {
        let plain = client(&fake, quick_retry());
        let client = if home_aware {
            plain.home_aware()
        } else {
            plain
        };
        three_reads(&client).await;
        let first = client
            .send(Request::deposit("acc-1", &body))
            .await
            .expect("an answer");
        assert_eq!(first.region, "eu", "the home is not known yet: the nearest");
        assert_eq!(client.home_of("acc-1").as_deref(), Some("ap"));
        let second = client
            .send(Request::deposit("acc-1", &body))
            .await
            .expect("an answer");
        let want = if home_aware { "ap" } else { "eu" };
        assert_eq!(second.region, want, "home-aware {home_aware}");
        let read = client.read_account("acc-1").await.expect("an answer");
        assert_eq!(read.region, "eu", "reads stay with the nearest");
    }
}

#[tokio::test]
async fn a_home_aware_client_learns_a_new_account_s_home_from_its_opening() {
    let fake = Fake::default();
    *fake.home.lock().expect("the fake's lock") = Some("ap".to_owned());
    fake.set_default("eu", Step::Answer(201, Duration::ZERO));
    fake.set_default("us", Step::Answer(201, Duration::from_millis(10)));
    fake.set_default("ap", Step::Answer(201, Duration::from_millis(40)));
    let client = client(&fake, quick_retry()).home_aware();
    three_reads(&client).await;
    let opened = client
        .send(Request::open_account(
            &ledger_wire::api::CreateAccountRequest {
                currency: "EUR".to_owned(),
                home_region: None,
            },
        ))
        .await
        .expect("an answer");
    assert_eq!(opened.region, "eu", "opened where the request landed");
    assert_eq!(client.home_of("acc-1").as_deref(), Some("ap"));
    let body = ledger_wire::api::AmountRequest {
        amount: "1.00".to_owned(),
        reference: None,
    };
    let first = client
        .send(Request::deposit("acc-1", &body))
        .await
        .expect("an answer");
    assert_eq!(first.region, "ap", "the first deposit goes straight home");
}

#[tokio::test]
async fn discovery_refuses_an_answer_that_is_not_a_region_list() {
    let fake = Fake::default();
    let error = Client::discover(&fake, "http://eu", RoutingConfig::default(), quick_retry())
        .await
        .expect_err("a deposit's answer is no region list");
    assert!(matches!(error, ClientError::Discovery { .. }), "{error}");
    fake.set_default("eu", Step::Down);
    let error = Client::discover(&fake, "http://eu", RoutingConfig::default(), quick_retry())
        .await
        .expect_err("nobody answers");
    assert!(error.to_string().contains("http://eu"), "{error}");
}
