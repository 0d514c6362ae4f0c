//! The other regions' nodes, as this node calls them: forwarding a request to an
//! account's home, asking whether a copy of an event has arrived (for `ack:
//! replicated`), and looking a transfer up. Every call goes to `/internal/…` and is
//! signed (`internal_api`, shared with the failover tool).

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use internal_api::{CallError, SignedCaller};
use ledger_wire::AccountId;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use internal_api::{Answer as PeerAnswer, Signer};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("this node has no internal secret, so it cannot call other regions")]
    NoCredentials,
}

/// Query of the "has the event arrived" call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaQuery {
    pub account: AccountId,
    pub seq: i64,
    pub event_id: Uuid,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ReplicaAnswer {
    pub present: bool,
}

/// The other regions' nodes: one signed caller (none without a secret: such a node
/// neither calls nor accepts internal calls).
#[derive(Debug, Clone)]
pub struct Peers {
    caller: Option<SignedCaller>,
    regions: Vec<String>,
}

impl Peers {
    /// Calls to the nodes at `urls`, signed with `secret`; `tls` trusts the CA of
    /// `https://` peers.
    pub fn new(
        region: &str,
        secret: Option<&str>,
        urls: Vec<(String, String)>,
        tls: Option<rustls::ClientConfig>,
    ) -> Self {
        let regions = urls.iter().map(|(name, _)| name.clone()).collect();
        let caller = secret.and_then(|secret| {
            let caller = SignedCaller::new(region, secret, urls, Duration::from_secs(1));
            let caller = match tls {
                Some(tls) => caller.and_then(|c| c.with_tls(tls)),
                None => caller,
            };
            caller
                .map_err(|error| tracing::warn!(%error, "no client for other regions"))
                .ok()
        });
        Peers { caller, regions }
    }

    pub fn signer(&self) -> Option<&Signer> {
        self.caller.as_ref().map(SignedCaller::signer)
    }

    pub fn regions(&self) -> Vec<String> {
        self.regions.clone()
    }

    /// Sends `method path` (a public path; `/internal` is prepended) to `region`.
    pub async fn call(
        &self,
        region: &str,
        method: Method,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<PeerAnswer, PeerError> {
        let caller = self.caller.as_ref().ok_or(PeerError::NoCredentials)?;
        Ok(caller
            .call(region, method, path, headers, body, timeout)
            .await?)
    }

    /// Asks every peer whether it holds the event; true as soon as one does, false if
    /// none did within `wait`.
    pub async fn confirm_replicated(
        &self,
        query: &ReplicaQuery,
        wait: Duration,
        traceparent: &str,
    ) -> bool {
        let path = ledger_wire::internal::replica(
            query.account,
            query.seq,
            query.event_id,
            wait.as_millis(),
        );
        let mut asks: FuturesUnordered<_> = self
            .regions
            .iter()
            .map(|region| {
                let trace = HeaderValue::from_str(traceparent)
                    .map(|v| vec![(HeaderName::from_static(ledger_wire::HEADER_TRACEPARENT), v)])
                    .unwrap_or_default();
                self.call(
                    region,
                    Method::GET,
                    &path,
                    trace,
                    Bytes::new(),
                    wait + Duration::from_secs(1),
                )
            })
            .collect();
        while let Some(answer) = asks.next().await {
            let present = answer.ok().filter(|a| a.status == 200).is_some_and(|a| {
                serde_json::from_slice::<ReplicaAnswer>(&a.body).is_ok_and(|r| r.present)
            });
            if present {
                return true;
            }
        }
        false
    }

    /// The first peer's 200 answer for a GET, if any peer has it.
    pub async fn find(&self, path: &str, timeout: Duration) -> Option<PeerAnswer> {
        let mut asks: FuturesUnordered<_> = self
            .regions
            .iter()
            .map(|region| self.call(region, Method::GET, path, Vec::new(), Bytes::new(), timeout))
            .collect();
        while let Some(answer) = asks.next().await {
            match answer {
                Ok(answer) if answer.status == 200 => return Some(answer),
                _ => {}
            }
        }
        None
    }
}
