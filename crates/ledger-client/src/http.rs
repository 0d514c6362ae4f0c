//! The client's transport over HTTP (reqwest): the API key, the Idempotency-Key, and
//! the answer's routing headers.

use std::time::Duration;

use ledger_wire::api_schema::AckMode;
use ledger_wire::{
    HEADER_ACK, HEADER_FORWARDED_TO, HEADER_HOME_REGION, HEADER_IDEMPOTENCY_KEY,
    HEADER_IDEMPOTENT_REPLAYED, HEADER_SERVED_BY,
};
use serde_json::Value;

use crate::client::{Method, RawAnswer, Request, Transport, TransportFailure};

#[derive(Debug, Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    api_key: Option<String>,
}

impl HttpTransport {
    /// `api_key`: sent as `Authorization: Bearer` (a deployment behind keys).
    pub fn new(api_key: Option<String>) -> Result<HttpTransport, reqwest::Error> {
        HttpTransport::with_connect_timeout(api_key, Duration::from_secs(1))
    }

    /// As [`HttpTransport::new`], giving up on a connection after `connect_timeout`
    /// (a drill that must tell a dead region quickly uses a short one).
    pub fn with_connect_timeout(
        api_key: Option<String>,
        connect_timeout: Duration,
    ) -> Result<HttpTransport, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpTransport { http, api_key })
    }
}

impl Transport for HttpTransport {
    async fn send(
        &self,
        base_url: &str,
        request: &Request,
        idempotency_key: Option<&str>,
        timeout: Duration,
    ) -> Result<RawAnswer, TransportFailure> {
        let url = format!("{}{}", base_url.trim_end_matches('/'), request.path);
        let mut builder = match request.method {
            Method::Get => self.http.get(&url),
            Method::Post => self.http.post(&url),
        }
        .timeout(timeout);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        if let Some(key) = idempotency_key {
            builder = builder.header(HEADER_IDEMPOTENCY_KEY, key);
        }
        match request.ack {
            Some(AckMode::Replicated) => builder = builder.header(HEADER_ACK, "replicated"),
            Some(AckMode::Local) => builder = builder.header(HEADER_ACK, "local"),
            None => {}
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder.send().await.map_err(failure)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let retry_after = header(reqwest::header::RETRY_AFTER.as_str())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let served_by = header(HEADER_SERVED_BY);
        let home = header(HEADER_HOME_REGION);
        let forwarded_to = header(HEADER_FORWARDED_TO);
        let content_type = header(reqwest::header::CONTENT_TYPE.as_str());
        let replayed = header(HEADER_IDEMPOTENT_REPLAYED).is_some();
        let bytes = response.bytes().await.map_err(failure)?;
        // A body that is not JSON (a proxy's error page) is kept as text.
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(RawAnswer {
            status,
            retry_after,
            served_by,
            home,
            forwarded_to,
            replayed,
            content_type,
            body,
        })
    }
}

fn failure(error: reqwest::Error) -> TransportFailure {
    if error.is_timeout() {
        TransportFailure::Timeout
    } else {
        TransportFailure::Connect(error.to_string())
    }
}
