//! The other regions' nodes, as this node calls them: forwarding a request to an
//! account's home, asking whether a copy of an event has arrived (for `ack:
//! replicated`), and looking a transfer up. Every call goes to `/internal/…` and is
//! signed ([`auth`]).

pub mod auth;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use ledger_wire::{AccountId, HEADER_CALLER_REGION, HEADER_SIGNATURE, HEADER_SIGNED_AT};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use auth::{AuthError, Credentials, Signer};

/// Prefix of every internal route.
pub const INTERNAL_PREFIX: &str = "/internal";

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("region {0:?} has no configured address")]
    UnknownRegion(String),
    #[error("region {region} could not be reached: {detail}")]
    Unreachable { region: String, detail: String },
    #[error("this node has no internal secret, so it cannot call other regions")]
    NoCredentials,
}

/// A peer's answer, relayed as is.
#[derive(Debug)]
pub struct PeerAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
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

#[derive(Debug, Clone)]
pub struct Peers {
    region: String,
    signer: Option<Signer>,
    urls: HashMap<String, String>,
    http: reqwest::Client,
}

impl Peers {
    pub fn new(region: &str, secret: Option<&str>, urls: Vec<(String, String)>) -> Self {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        Peers {
            region: region.to_owned(),
            signer: secret.map(Signer::new),
            urls: urls.into_iter().collect(),
            http,
        }
    }

    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    pub fn regions(&self) -> Vec<String> {
        self.urls.keys().cloned().collect()
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
        let base = self
            .urls
            .get(region)
            .ok_or_else(|| PeerError::UnknownRegion(region.to_owned()))?;
        let signer = self.signer.as_ref().ok_or(PeerError::NoCredentials)?;
        let internal_path = format!("{INTERNAL_PREFIX}{path}");
        let credentials = signer.sign(&self.region, method.as_str(), &internal_path, &body);
        let mut request = self
            .http
            .request(method, format!("{base}{internal_path}"))
            .timeout(timeout)
            .header(HEADER_CALLER_REGION, &credentials.caller)
            .header(HEADER_SIGNED_AT, credentials.signed_at_ms.to_string())
            .header(HEADER_SIGNATURE, &credentials.signature)
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let unreachable = |e: reqwest::Error| PeerError::Unreachable {
            region: region.to_owned(),
            detail: if e.is_timeout() {
                format!("no answer within {} ms", timeout.as_millis())
            } else if e.is_connect() {
                "connection refused or timed out".to_owned()
            } else {
                e.to_string()
            },
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unreachable)?;
        Ok(PeerAnswer {
            status,
            headers,
            body,
        })
    }

    /// Asks every peer whether it holds the event; true as soon as one does, false if
    /// none did within `wait`.
    pub async fn confirm_replicated(&self, query: &ReplicaQuery, wait: Duration) -> bool {
        let path = format!(
            "/v1/replicas/{}?seq={}&event_id={}&wait_ms={}",
            query.account,
            query.seq,
            query.event_id,
            wait.as_millis()
        );
        let mut asks: FuturesUnordered<_> = self
            .urls
            .keys()
            .map(|region| {
                self.call(
                    region,
                    Method::GET,
                    &path,
                    Vec::new(),
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
            .urls
            .keys()
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
