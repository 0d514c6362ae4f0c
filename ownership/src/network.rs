//! Raft RPCs between voters: JSON over HTTP on a pooled client.
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
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
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
        PeerClient {
            target,
            base: format!("http://{}", node.addr),
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
