//! The client library for the ownership service, used by region nodes, the failover
//! tool and tests.
//!
//! It knows every voter's address and tries them in turn, starting with the one
//! that answered last. It moves on to the next voter only when the request surely
//! did not take effect (connection refused, no leader known, leader unreachable, or
//! any failure of a read, which changes nothing),
//! and keeps going round the voters for a while (an election takes a second or
//! two); when the outcome is unknown (a commit timed out) it says so instead of
//! retrying.
//!
//! Every request is signed with the deployment's secret (the same HMAC scheme as the
//! regions' internal API, `internal_api::auth`), signed as `actor`: voters refuse
//! unsigned calls, so only holders of the secret can move ownership or read the map.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use internal_api::Signer;
use ledger_wire::ownership::{
    ChangeRecord, ClusterStatus, Command, CommandRequest, LeaseGrant, Outcome, OwnershipMap,
    RegionSpec, RegionStatus, RejectCode, SlotAtEpoch, WatchReply,
};
use ledger_wire::AccountId;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Error codes after which another voter may be asked: the request was not applied.
const RETRYABLE_CODES: [&str; 3] = ["no_leader", "leader_unreachable", "no_quorum"];
/// How long a request keeps going round the voters while none can serve it.
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Shortest deployment secret accepted (the same rule as the nodes' and voters').
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no voter could serve the request: {0}")]
    Unavailable(String),
    #[error("the command's outcome is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("refused ({code:?}): {message}")]
    Rejected { code: RejectCode, message: String },
    #[error("voter answered {status}: {message}")]
    Http { status: u16, message: String },
    #[error("unexpected answer: {0}")]
    Decode(String),
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// The answer of a voter-set change.
#[derive(Debug, Deserialize)]
struct VoterSet {
    voters: BTreeMap<u64, String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

#[derive(Debug)]
pub struct OwnershipClient {
    voters: Vec<String>,
    actor: String,
    signer: Signer,
    http: reqwest::Client,
    preferred: AtomicUsize,
    retry_for: Duration,
}

impl OwnershipClient {
    /// `voters` are `host:port` addresses; `actor` names the caller in the history and
    /// in the signature; `secret` is the deployment's shared secret.
    pub fn new(
        voters: Vec<String>,
        actor: impl Into<String>,
        secret: &str,
    ) -> Result<Self, ClientError> {
        if voters.is_empty() {
            return Err(ClientError::Config("no voter addresses given".into()));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(ClientError::Config(format!(
                "the deployment's secret must be at least {MIN_SECRET_LEN} characters"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(OwnershipClient {
            voters,
            actor: actor.into(),
            signer: Signer::new(secret),
            http,
            preferred: AtomicUsize::new(0),
            retry_for: DEFAULT_RETRY_FOR,
        })
    }

    /// How long to keep trying while no voter can serve (default 5 s; zero = one round).
    pub fn with_retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// Sends one request, going round the voters until one serves it or `retry_for`
    /// has passed, and decodes a 2xx body. 409/422 bodies are decoded too (they carry
    /// a refused [`Outcome`]).
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let repeatable = method == Method::GET;
        self.send_repeatable(method, path, body, timeout, repeatable)
            .await
    }

    /// [`send`](Self::send); `repeatable`: the request may be made twice to the same
    /// effect (a read, or a lease renewal), so a voter that failed it in any way is
    /// passed over for the next one.
    async fn send_repeatable<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        timeout: Duration,
        repeatable: bool,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        loop {
            match self
                .send_round(&method, path, body, timeout, repeatable)
                .await
            {
                Err(ClientError::Unavailable(reason)) => {
                    if tokio::time::Instant::now() + RETRY_PAUSE > deadline {
                        return Err(ClientError::Unavailable(reason));
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// Tries each voter at most once. A voter whose answer was lost is not asked first
    /// next time: through a region's TCP proxy a dead voter looks like a lost answer,
    /// not a refused connection, and starting every round with it again stopped a
    /// region's lease renewals for 11 s after the leader's region died.
    async fn send_round<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        timeout: Duration,
        repeatable: bool,
    ) -> Result<T, ClientError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for attempt in 0..self.voters.len() {
            let index = (first + attempt) % self.voters.len();
            let url = format!("http://{}{path}", self.voters[index]);
            let request = self
                .signed(method.clone(), &url, path, body)?
                .timeout(timeout);
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if e.is_connect() => {
                    last_error = format!("{}: {e}", self.voters[index]);
                    continue;
                }
                // A read changes nothing, a renewal renews: whatever happened to it,
                // another voter may serve it.
                Err(e) if repeatable => {
                    last_error = format!("{}: {e}", self.voters[index]);
                    continue;
                }
                Err(e) => {
                    self.preferred
                        .store((index + 1) % self.voters.len(), Ordering::Relaxed);
                    return Err(ClientError::OutcomeUnknown(format!(
                        "{}: {e}",
                        self.voters[index]
                    )));
                }
            };
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| ClientError::Decode(e.to_string()))?;
            if status.is_success()
                || status == StatusCode::CONFLICT
                || status == StatusCode::UNPROCESSABLE_ENTITY
            {
                self.preferred.store(index, Ordering::Relaxed);
                return serde_json::from_slice(&bytes).map_err(|e| {
                    ClientError::Decode(format!("{e}: {}", String::from_utf8_lossy(&bytes)))
                });
            }
            let error: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            match error {
                Some(error)
                    if RETRYABLE_CODES.contains(&error.code.as_str())
                        || (repeatable && status == StatusCode::SERVICE_UNAVAILABLE) =>
                {
                    last_error = format!("{}: {}", self.voters[index], error.message);
                }
                Some(error) if status == StatusCode::SERVICE_UNAVAILABLE => {
                    return Err(ClientError::OutcomeUnknown(error.message))
                }
                Some(error) => {
                    return Err(ClientError::Http {
                        status: status.as_u16(),
                        message: error.message,
                    })
                }
                None => {
                    return Err(ClientError::Http {
                        status: status.as_u16(),
                        message: String::from_utf8_lossy(&bytes).into_owned(),
                    })
                }
            }
        }
        Err(ClientError::Unavailable(last_error))
    }

    /// A request to `url` (whose path with query is `path`) carrying `body` as JSON,
    /// signed as this client's actor.
    fn signed(
        &self,
        method: Method,
        url: &str,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let bytes = match body {
            Some(body) => {
                serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?
            }
            None => Vec::new(),
        };
        let credentials = self.signer.sign(&self.actor, method.as_str(), path, &bytes);
        let mut request = credentials.attach(self.http.request(method, url));
        if body.is_some() {
            request = request
                .header("content-type", "application/json")
                .body(bytes);
        }
        Ok(request)
    }

    /// Proposes a command; a refusal by the state machine comes back as
    /// `Ok(Outcome::Rejected)`.
    pub async fn command(&self, command: Command, reason: &str) -> Result<Outcome, ClientError> {
        // A renewal made twice grants what the region owns at the later one: nothing
        // else changes, so it may go to another voter after any failure.
        let repeatable = matches!(command, Command::RenewLease { .. });
        let request = CommandRequest {
            actor: self.actor.clone(),
            reason: reason.to_owned(),
            command,
        };
        self.send_repeatable(
            Method::POST,
            "/v1/commands",
            Some(&request),
            Duration::from_secs(10),
            repeatable,
        )
        .await
    }

    /// Like [`command`](Self::command), with a refusal turned into an error.
    pub async fn apply(&self, command: Command, reason: &str) -> Result<Outcome, ClientError> {
        match self.command(command, reason).await? {
            Outcome::Rejected { code, message } => Err(ClientError::Rejected { code, message }),
            outcome => Ok(outcome),
        }
    }

    pub async fn init_cluster(
        &self,
        slot_count: u32,
        lease_ttl_ms: u64,
        regions: Vec<RegionSpec>,
    ) -> Result<Outcome, ClientError> {
        let command = Command::InitCluster {
            slot_count,
            lease_ttl_ms,
            regions,
        };
        self.apply(command, "create the cluster").await
    }

    /// Renews `region`'s lease; the grant lists everything the region owns now.
    pub async fn renew_lease(&self, region: &str) -> Result<LeaseGrant, ClientError> {
        let command = Command::RenewLease {
            region: region.to_owned(),
        };
        match self.apply(command, "").await? {
            Outcome::Lease(grant) => Ok(grant),
            other => Err(ClientError::Decode(format!(
                "expected a lease, got {other:?}"
            ))),
        }
    }

    pub async fn freeze_slots(
        &self,
        slots: Vec<u32>,
        frozen: bool,
        reason: &str,
    ) -> Result<Outcome, ClientError> {
        self.apply(Command::FreezeSlots { slots, frozen }, reason)
            .await
    }

    pub async fn transfer_slots(
        &self,
        slots: Vec<SlotAtEpoch>,
        to: &str,
        reason: &str,
    ) -> Result<Outcome, ClientError> {
        let command = Command::TransferSlots {
            slots,
            to: to.to_owned(),
        };
        self.apply(command, reason).await
    }

    pub async fn promote(
        &self,
        region: &str,
        force: bool,
        reason: &str,
    ) -> Result<Outcome, ClientError> {
        let command = Command::Promote {
            region: region.to_owned(),
            force,
        };
        self.apply(command, reason).await
    }

    pub async fn rehome_account(
        &self,
        account: AccountId,
        to: &str,
        expected_epoch: Option<u64>,
        reason: &str,
    ) -> Result<Outcome, ClientError> {
        let command = Command::RehomeAccount {
            account,
            to: to.to_owned(),
            expected_epoch,
        };
        self.apply(command, reason).await
    }

    pub async fn set_region(
        &self,
        region: &str,
        weight: Option<u32>,
        status: Option<RegionStatus>,
        reason: &str,
    ) -> Result<Outcome, ClientError> {
        let command = Command::SetRegion {
            region: region.to_owned(),
            weight,
            status,
        };
        self.apply(command, reason).await
    }

    /// Adds voter `node_id` at `addr` (a learner first, a voter once caught up);
    /// answers the voters now in the cluster.
    pub async fn add_voter(
        &self,
        node_id: u64,
        addr: &str,
    ) -> Result<BTreeMap<u64, String>, ClientError> {
        let body = serde_json::json!({ "node_id": node_id, "addr": addr });
        let answer: VoterSet = self
            .send(
                Method::POST,
                "/v1/voters",
                Some(&body),
                Duration::from_secs(30),
            )
            .await?;
        Ok(answer.voters)
    }

    /// Removes voter `node_id`; answers the voters left.
    pub async fn remove_voter(&self, node_id: u64) -> Result<BTreeMap<u64, String>, ClientError> {
        let path = format!("/v1/voters/{node_id}");
        let answer: VoterSet = self
            .send(Method::DELETE, &path, None::<&()>, Duration::from_secs(30))
            .await?;
        Ok(answer.voters)
    }

    /// The whole map, linearizable (no change committed before the call is missing).
    pub async fn map(&self) -> Result<OwnershipMap, ClientError> {
        self.send(Method::GET, "/v1/map", None::<&()>, Duration::from_secs(10))
            .await
    }

    /// Ownership changes after `since`, oldest first, linearizable.
    pub async fn history(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, ClientError> {
        let path = format!("/v1/history?since={since}&limit={limit}");
        self.send(Method::GET, &path, None::<&()>, Duration::from_secs(10))
            .await
    }

    /// Waits up to `wait` for changes after `since`.
    pub async fn watch(&self, since: u64, wait: Duration) -> Result<WatchReply, ClientError> {
        let path = format!("/v1/watch?since={since}&wait_ms={}", wait.as_millis());
        self.send(
            Method::GET,
            &path,
            None::<&()>,
            wait + Duration::from_secs(5),
        )
        .await
    }

    /// One voter's view of the Raft cluster (not forwarded).
    pub async fn cluster_status(&self, voter: &str) -> Result<ClusterStatus, ClientError> {
        self.ask_one(voter, "/v1/cluster").await
    }

    /// The map as one voter has applied it, without a quorum check (not forwarded;
    /// may lag the leader).
    pub async fn local_map(&self, voter: &str) -> Result<OwnershipMap, ClientError> {
        self.ask_one(voter, "/v1/map?consistency=local").await
    }

    /// A signed GET of `path` at one voter, decoded from its 2xx answer.
    async fn ask_one<T: DeserializeOwned>(
        &self,
        voter: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = format!("http://{voter}{path}");
        let response = self
            .signed(Method::GET, &url, path, None::<&()>)?
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{voter}: {e}")))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if !status.is_success() {
            return Err(ClientError::Http {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
