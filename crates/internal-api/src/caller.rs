//! One signed HTTP caller: signs `METHOD /internal{path}` and its body as `caller`,
//! sends it to a region node's base URL, and hands back the status, headers and body.
//! What an answer means (relay it, decode it) is the caller's business.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;

use crate::Signer;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("region {0:?} has no configured address")]
    UnknownRegion(String),
    #[error("region {region} could not be reached: {detail}")]
    Unreachable { region: String, detail: String },
    #[error("invalid HTTP client configuration: {0}")]
    Config(String),
}

/// A node's answer, as received.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The problem document's `detail` (or the body as text) of a refusal.
    pub fn detail(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        problem_detail(&text).unwrap_or_else(|| text.into_owned())
    }
}

/// `"detail"` of an RFC 9457 problem document.
fn problem_detail(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("detail")?.as_str().map(str::to_owned)
}

/// Signed calls from `caller` to the region nodes named in `nodes`.
#[derive(Debug, Clone)]
pub struct SignedCaller {
    caller: String,
    signer: Signer,
    nodes: BTreeMap<String, String>,
    http: reqwest::Client,
    connect_timeout: Duration,
}

fn http_client(
    connect_timeout: Duration,
    tls: Option<rustls::ClientConfig>,
) -> Result<reqwest::Client, CallError> {
    let mut builder = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout);
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(tls);
    }
    builder
        .build()
        .map_err(|e| CallError::Config(e.to_string()))
}

impl SignedCaller {
    /// `nodes`: region name -> the node's base URL (`http://host:port`, or `https://`
    /// with [`SignedCaller::with_tls`]).
    pub fn new(
        caller: &str,
        secret: &str,
        nodes: impl IntoIterator<Item = (String, String)>,
        connect_timeout: Duration,
    ) -> Result<Self, CallError> {
        Ok(SignedCaller {
            caller: caller.to_owned(),
            signer: Signer::new(secret),
            nodes: nodes.into_iter().collect(),
            http: http_client(connect_timeout, None)?,
            connect_timeout,
        })
    }

    /// The same caller, reaching `https://` nodes with `tls` (whose roots it trusts).
    pub fn with_tls(mut self, tls: rustls::ClientConfig) -> Result<Self, CallError> {
        self.http = http_client(self.connect_timeout, Some(tls))?;
        Ok(self)
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    pub fn node_url(&self, region: &str) -> Option<&str> {
        self.nodes.get(region).map(String::as_str)
    }

    /// Sends `method /internal{path}` with `body` to `region`'s node, signed.
    pub async fn call(
        &self,
        region: &str,
        method: Method,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let base = self
            .node_url(region)
            .ok_or_else(|| CallError::UnknownRegion(region.to_owned()))?;
        let internal_path = format!("{}{path}", ledger_wire::internal::PREFIX);
        let credentials = self
            .signer
            .sign(&self.caller, method.as_str(), &internal_path, &body);
        let mut request = credentials
            .attach(
                self.http
                    .request(method, format!("{base}{internal_path}"))
                    .timeout(timeout),
            )
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let unreachable = |e: reqwest::Error| CallError::Unreachable {
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
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_are_read_with_escapes() {
        let body = r#"{"type":"x","detail":"slot 3 is \"frozen\"","status":409}"#;
        assert_eq!(
            problem_detail(body).as_deref(),
            Some(r#"slot 3 is "frozen""#)
        );
        assert_eq!(problem_detail("not json"), None);
    }

    #[test]
    fn an_unknown_region_is_refused_before_any_request() {
        let caller = SignedCaller::new(
            "test",
            "0123456789abcdef",
            [("a".to_owned(), "http://127.0.0.1:1".to_owned())],
            Duration::from_millis(100),
        )
        .expect("client");
        let runtime = tokio_runtime();
        let error = runtime
            .block_on(caller.call(
                "b",
                Method::GET,
                "/v1/x",
                Vec::new(),
                Bytes::new(),
                Duration::from_secs(1),
            ))
            .expect_err("unknown region");
        assert!(matches!(error, CallError::UnknownRegion(r) if r == "b"));
    }

    fn tokio_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }
}
