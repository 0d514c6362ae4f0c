//! Raft RPCs between voters: JSON over HTTP/2 (cleartext, prior knowledge), one
//! long-lived connection per peer.
//!
//! Why HTTP/2: openraft 0.9 gives every AppendEntries a timeout of exactly the
//! heartbeat interval and drops the request when it passes. Over HTTP/1 a dropped
//! request takes its connection with it, and the next RPC must open a new one: two
//! round trips. Between voters farther apart than half a heartbeat (us-east and
//! ap-south under `ledger-local up --geo`: 190 ms, heartbeat 291 ms) one late answer
//! therefore meant no AppendEntries ever arrived again and nothing committed (found
//! killing the leader's region under load). Over HTTP/2 a dropped request resets
//! only its stream; the connection, opened ahead of the first RPC and kept alive by
//! pings, stays.
//!
//! Each RPC is one POST to the peer's `/raft/*` route; the body of the answer is the
//! peer's `Result`, so a Raft-level refusal (a higher vote, say) comes back as a
//! remote error rather than a transport failure. Every RPC is signed with the
//! deployment's secret as `voter-{id}`: a voter obeys no AppendEntries or vote request
//! from anyone without it.

use std::time::Duration;

use internal_api::Signer;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{NodeId, TypeConfig};

pub const ROUTE_APPEND: &str = "/raft/append";
pub const ROUTE_VOTE: &str = "/raft/vote";
pub const ROUTE_SNAPSHOT: &str = "/raft/snapshot";

const CONNECT_TIMEOUT_MS: u64 = 500;
/// How often an idle connection to a peer is pinged (and how long a ping may take
/// before the connection is given up).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long the request that opens a connection to a new peer may take.
const WARM_UP: Duration = Duration::from_secs(5);

/// Creates one [`PeerClient`] per peer, sharing a connection pool.
#[derive(Clone)]
pub struct HttpNetwork {
    http: reqwest::Client,
    caller: String,
    signer: Signer,
}

impl HttpNetwork {
    /// The network of voter `node_id`, signing with the deployment's `secret`.
    pub fn new(node_id: NodeId, secret: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Some(KEEP_ALIVE))
            .http2_keep_alive_timeout(KEEP_ALIVE)
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(None)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        HttpNetwork {
            http,
            caller: format!("voter-{node_id}"),
            signer: Signer::new(secret),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let base = format!("http://{}", node.addr);
        // Open the connection now, on a request nobody times out, so the first
        // AppendEntries does not spend its heartbeat's worth of time connecting.
        let warm = self.http.get(format!("{base}/healthz")).timeout(WARM_UP);
        tokio::spawn(async move {
            if let Err(e) = warm.send().await {
                tracing::debug!(target, error = %e, "could not open a connection to the peer yet");
            }
        });
        PeerClient {
            target,
            base,
            http: self.http.clone(),
            caller: self.caller.clone(),
            signer: self.signer.clone(),
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    base: String,
    http: reqwest::Client,
    caller: String,
    signer: Signer,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        route: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let credentials = self.signer.sign(&self.caller, "POST", route, &body);
        let sent = credentials
            .attach(
                self.http
                    .post(format!("{}{route}", self.base))
                    .timeout(option.hard_ttl()),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // A refused or timed-out connection means the peer is down or cut off:
            // openraft backs off from unreachable peers instead of hammering them.
            Err(e) if e.is_connect() || e.is_timeout() => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let detail = response.text().await.unwrap_or_default();
            let refused = std::io::Error::other(format!(
                "voter {} refused this voter's signature (do all voters share LEDGER_INTERNAL_SECRET?): {detail}",
                self.target
            ));
            return Err(RPCError::Network(NetworkError::new(&refused)));
        }
        let answer: Result<Resp, RaftError<NodeId, E>> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(ROUTE_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(ROUTE_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(ROUTE_VOTE, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Short retries: voters are few, and a restarted voter should rejoin quickly.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
