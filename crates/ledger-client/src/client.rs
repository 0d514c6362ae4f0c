//! The client: one request, sent to the nearest healthy region and on to the next ones
//! within its budget, always under the same Idempotency-Key, so a write the first region
//! may have made is made exactly once. Generic over the [`Transport`], so the rules are
//! tested against a fake one and used over HTTP ([`crate::http::HttpTransport`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ledger_wire::api::{AmountRequest, CreateAccountRequest, CreateTransferRequest, Regions};
use ledger_wire::api_schema::AckMode;
use serde_json::Value;

use crate::retry::{classify, Outcome, RetryConfig, Verdict};
use crate::routing::{RegionState, Router, RoutingConfig};
use crate::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

const OPEN_ACCOUNT_PATH: &str = "/v1/accounts";

/// One request of the public API (`path` from `/v1/...`).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    /// Writes get a fresh key when none is given; every attempt carries the same one.
    pub idempotency_key: Option<String>,
    /// The account whose home makes this write (home-aware routing sends it there).
    pub account: Option<String>,
    /// When the write is answered (`ack`; the node's default, local, when `None`).
    pub ack: Option<AckMode>,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Request {
        Request {
            method: Method::Get,
            path: path.into(),
            body: None,
            idempotency_key: None,
            account: None,
            ack: None,
        }
    }

    pub fn post(path: impl Into<String>, body: Value) -> Request {
        Request {
            method: Method::Post,
            path: path.into(),
            body: Some(body),
            idempotency_key: None,
            account: None,
            ack: None,
        }
    }

    /// A deposit to `account` (typed on the API's own body).
    pub fn deposit(account: &str, body: &AmountRequest) -> Request {
        Request::post(format!("/v1/accounts/{account}/deposits"), json(body)).for_account(account)
    }

    /// A withdrawal from `account`.
    pub fn withdraw(account: &str, body: &AmountRequest) -> Request {
        Request::post(format!("/v1/accounts/{account}/withdrawals"), json(body))
            .for_account(account)
    }

    /// A transfer, made by the home of the account debited.
    pub fn transfer(body: &CreateTransferRequest) -> Request {
        Request::post("/v1/transfers", json(body)).for_account(&body.from.to_string())
    }

    /// Opens an account (at `home_region`, or where the request lands); a home-aware
    /// client learns the new account's home from the answer.
    pub fn open_account(body: &CreateAccountRequest) -> Request {
        Request::post(OPEN_ACCOUNT_PATH, json(body))
    }

    /// Names the account whose home makes this write.
    pub fn for_account(mut self, account: &str) -> Request {
        self.account = Some(account.to_owned());
        self
    }

    /// The Idempotency-Key every attempt of this request carries: the one given, or a
    /// fresh one for a write; none for a read.
    pub fn attempt_key(&self) -> Option<String> {
        match self.method {
            Method::Post => Some(
                self.idempotency_key
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            ),
            Method::Get => None,
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Request {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Asks for the write to be answered only once another region holds a copy.
    pub fn ack(mut self, ack: AckMode) -> Request {
        self.ack = Some(ack);
        self
    }
}

/// A wire body as JSON (these bodies are plain data: serialising cannot fail).
fn json<B: serde::Serialize>(body: &B) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// What a region answered, as the transport saw it.
#[derive(Debug, Clone, Default)]
pub struct RawAnswer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// `x-served-by-region`, `x-home-region`, `x-forwarded-to-region`,
    /// `idempotent-replayed`.
    pub served_by: Option<String>,
    pub home: Option<String>,
    pub forwarded_to: Option<String>,
    pub replayed: bool,
    /// `content-type` (`application/problem+json` for an error's problem document).
    pub content_type: Option<String>,
    /// The body as JSON; a body that is not JSON (a proxy's error page) as a string.
    pub body: Value,
}

impl RawAnswer {
    /// The problem type's last segment (`insufficient-funds`) of an error answer, or
    /// `http-<status>` when the body names none.
    pub fn problem(&self) -> String {
        let status = self.status;
        self.body["type"].as_str().map_or_else(
            || format!("http-{status}"),
            |t| t.rsplit('/').next().unwrap_or(t).to_owned(),
        )
    }
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportFailure {
    Timeout,
    Connect(String),
}

/// Sends one attempt to one region.
pub trait Transport: Send + Sync {
    fn send(
        &self,
        base_url: &str,
        request: &Request,
        idempotency_key: Option<&str>,
        timeout: Duration,
    ) -> impl Future<Output = Result<RawAnswer, TransportFailure>> + Send;
}

/// The result of a request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The region that answered (the one the client asked; `served_by` is what it said).
    pub region: String,
    pub served_by: Option<String>,
    pub home: Option<String>,
    pub replayed: bool,
    /// Attempts made, the answering one included (1: no retry).
    pub attempts: u32,
    /// The Idempotency-Key every attempt carried (writes).
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no region could serve the request within {budget:?} ({attempts} attempts; last: {last})"
    )]
    Exhausted {
        budget: Duration,
        attempts: u32,
        last: String,
    },
    #[error("the client has no region to send to")]
    NoRegions,
    #[error("could not learn the deployment's regions from {url}: {detail}")]
    Discovery { url: String, detail: String },
}

/// A client of one deployment.
#[derive(Debug)]
pub struct Client<T> {
    transport: T,
    retry: RetryConfig,
    router: Mutex<Router>,
    session: Mutex<Session>,
    /// Send writes straight to their account's home once an answer named it.
    home_aware: bool,
    homes: Mutex<HashMap<String, String>>,
}

impl<T: Transport> Client<T> {
    /// `regions`: (name, base URL) of every region the client may use.
    pub fn new(
        transport: T,
        regions: Vec<(String, String)>,
        routing: RoutingConfig,
        retry: RetryConfig,
    ) -> Client<T> {
        Client {
            transport,
            retry,
            router: Mutex::new(Router::new(routing, regions)),
            session: Mutex::new(Session::default()),
            home_aware: false,
            homes: Mutex::new(HashMap::new()),
        }
    }

    /// Finds the deployment's regions by asking one of them (`GET /v1/regions` at
    /// `any_region`), then [`Client::new`] over all of them.
    pub async fn discover(
        transport: T,
        any_region: &str,
        routing: RoutingConfig,
        retry: RetryConfig,
    ) -> Result<Client<T>, ClientError> {
        let refused = |detail: String| ClientError::Discovery {
            url: any_region.to_owned(),
            detail,
        };
        let answer = transport
            .send(
                any_region,
                &Request::get("/v1/regions"),
                None,
                retry.attempt_timeout,
            )
            .await
            .map_err(|failure| refused(format!("{failure:?}")))?;
        if answer.status != 200 {
            return Err(refused(format!("{} {}", answer.status, answer.body)));
        }
        let list: Regions = serde_json::from_value(answer.body)
            .map_err(|e| refused(format!("not a region list: {e}")))?;
        if list.regions.is_empty() {
            return Err(refused(
                "the deployment lists no regions (LEDGER_PUBLIC_URLS)".into(),
            ));
        }
        let regions = list.regions.into_iter().map(|r| (r.name, r.url)).collect();
        Ok(Client::new(transport, regions, routing, retry))
    }

    /// Home-aware routing: a write whose account's home an earlier answer named
    /// (`x-home-region`) goes to that home first while its breaker is closed, saving
    /// the forwarding hop; otherwise, and on failure, the nearest regions as usual.
    pub fn home_aware(mut self) -> Client<T> {
        self.home_aware = true;
        self
    }

    /// The home this client learned for `account`.
    pub fn home_of(&self, account: &str) -> Option<String> {
        self.homes().get(account).cloned()
    }

    /// The regions with their measured latency and breaker, for the application's
    /// metrics.
    pub fn regions(&self) -> Vec<RegionState> {
        self.router().regions().to_vec()
    }

    /// Measures every region at once with a GET of `/readyz`: an answer feeds the
    /// region's latency average (and closes an open breaker: the half-open probe), a
    /// failure or a 503 counts against it. Run it now and then (`run_probes`): a region
    /// measured once while slow (its first connection, a pause) is otherwise never
    /// asked again while another one is faster.
    pub async fn probe_all(&self) {
        let targets: Vec<(usize, String)> = self
            .router()
            .regions()
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.url.clone()))
            .collect();
        let probe = Request::get("/readyz");
        let probes = targets.iter().map(|(index, url)| {
            let probe = &probe;
            async move {
                let started = Instant::now();
                let result = self
                    .transport
                    .send(url, probe, None, self.retry.attempt_timeout)
                    .await;
                (*index, started.elapsed(), result)
            }
        });
        for (index, latency, result) in futures::future::join_all(probes).await {
            match result {
                Ok(answer) if answer.status < 300 => self.router().success(index, latency),
                _ => self.router().failure(index, Instant::now()),
            }
        }
    }

    /// [`Client::probe_all`] every `every` until `stop` resolves.
    pub async fn run_probes(&self, every: Duration, stop: impl Future<Output = ()>) {
        let probing = async {
            loop {
                self.probe_all().await;
                tokio::time::sleep(every).await;
            }
        };
        tokio::select! {
            () = probing => {}
            () = stop => {}
        }
    }

    /// The region the next request goes to first.
    pub fn nearest(&self) -> Option<String> {
        let mut router = self.router();
        let order = router.order(Instant::now());
        order.first().map(|&i| router.regions()[i].name.clone())
    }

    /// The `min_seq` this client's reads of `account` carry.
    pub fn min_seq(&self, account: &str) -> Option<i64> {
        self.session().min_seq(account)
    }

    /// Reads an account no older than this client's last write to it.
    pub async fn read_account(&self, account: &str) -> Result<Answer, ClientError> {
        let path = match self.min_seq(account) {
            Some(seq) => format!("/v1/accounts/{account}?min_seq={seq}"),
            None => format!("/v1/accounts/{account}"),
        };
        self.send(Request::get(path)).await
    }

    /// Sends `request` (see the crate's rules).
    pub async fn send(&self, request: Request) -> Result<Answer, ClientError> {
        let key = request.attempt_key();
        let deadline = Instant::now() + self.retry.budget;
        let mut attempts = 0_u32;
        let mut retries = 0_u32;
        let mut tried: Vec<usize> = Vec::new();
        let mut same_region: Option<usize> = None;
        let mut last = String::from("nothing sent");
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let (index, url, name) = {
                let mut router = self.router();
                let home = (self.home_aware && tried.is_empty() && request.method == Method::Post)
                    .then(|| request.account.as_deref().and_then(|a| self.home_of(a)))
                    .flatten()
                    .and_then(|home| router.closed_index(&home));
                let index = match same_region.take().or(home) {
                    Some(index) => index,
                    None => {
                        let order = router.order(now);
                        let first = *order.first().ok_or(ClientError::NoRegions)?;
                        match order.iter().find(|i| !tried.contains(i)) {
                            Some(&index) => index,
                            None => {
                                tried.clear();
                                first
                            }
                        }
                    }
                };
                let region = &router.regions()[index];
                (index, region.url.clone(), region.name.clone())
            };
            tried.push(index);
            attempts += 1;
            let timeout = self.retry.attempt_timeout.min(deadline - now);
            let started = Instant::now();
            let result = self
                .transport
                .send(&url, &request, key.as_deref(), timeout)
                .await;
            let outcome = match &result {
                Ok(answer) => Outcome::Answered {
                    status: answer.status,
                    retry_after: answer.retry_after,
                },
                Err(TransportFailure::Timeout) => Outcome::Timeout,
                Err(TransportFailure::Connect(_)) => Outcome::Connect,
            };
            match (classify(&outcome), result) {
                (Verdict::Done, Ok(raw)) => {
                    self.router().success(index, started.elapsed());
                    if raw.status < 300 {
                        self.session().observe(&raw.body);
                    }
                    // The account a write named, or the one an open just made (its
                    // answer names both the id and the home).
                    let account = request.account.clone().or_else(|| {
                        let opened = request.method == Method::Post
                            && request.path == OPEN_ACCOUNT_PATH
                            && raw.status == 201;
                        opened
                            .then(|| raw.body["id"].as_str().map(str::to_owned))
                            .flatten()
                    });
                    if let (Some(account), Some(home)) = (account, &raw.home) {
                        self.homes().insert(account, home.clone());
                    }
                    return Ok(Answer {
                        status: raw.status,
                        body: raw.body,
                        region: name,
                        served_by: raw.served_by,
                        home: raw.home,
                        replayed: raw.replayed,
                        attempts,
                        idempotency_key: key,
                    });
                }
                (Verdict::SameRegionAfter(wait), _) => {
                    // Healthy, only busy: no failure against it, and nowhere else.
                    self.router().success(index, started.elapsed());
                    last = format!("{name}: 429, retry after {wait:?}");
                    if Instant::now() + wait >= deadline {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    same_region = Some(index);
                }
                (_, result) => {
                    self.router().failure(index, Instant::now());
                    last = match result {
                        Ok(raw) => format!("{name}: {} {}", raw.status, raw.body),
                        Err(failure) => format!("{name}: {failure:?}"),
                    };
                    let pause = self.retry.backoff(retries, &mut rand::rng());
                    retries += 1;
                    if Instant::now() + pause >= deadline {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(ClientError::Exhausted {
            budget: self.retry.budget,
            attempts,
            last,
        })
    }

    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn homes(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.homes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }
}
