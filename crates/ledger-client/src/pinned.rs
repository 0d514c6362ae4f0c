//! One region's API exactly as that region answers it: no routing, no retry, no
//! breaker. For the tools whose subject is what each region does with each attempt: a
//! drill that records every attempt for the checker and picks its own next region, a
//! test of one node's answers, the demo's per-location view of served-by and
//! forwarding. Applications use [`crate::Client`], which goes on to other regions.

use std::time::{Duration, Instant};

use crate::client::{RawAnswer, Request, Transport, TransportFailure};
use crate::http::HttpTransport;

/// A client of one region (`region` at `url`).
#[derive(Debug, Clone)]
pub struct RegionClient<T = HttpTransport> {
    region: String,
    url: String,
    transport: T,
    timeout: Duration,
}

/// One attempt's answer, with the key it carried and how long it took.
#[derive(Debug, Clone)]
pub struct Reply {
    pub answer: RawAnswer,
    /// The Idempotency-Key sent (writes).
    pub idempotency_key: Option<String>,
    pub latency: Duration,
}

impl RegionClient<HttpTransport> {
    /// Over HTTP, sending `api_key` (a deployment behind keys) as `Authorization:
    /// Bearer`; an attempt unanswered after `timeout` fails as
    /// [`TransportFailure::Timeout`].
    pub fn over_http(
        region: &str,
        url: &str,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Result<RegionClient<HttpTransport>, reqwest::Error> {
        let transport = HttpTransport::new(api_key.map(str::to_owned))?;
        Ok(RegionClient::new(transport, region, url, timeout))
    }
}

impl<T: Transport> RegionClient<T> {
    pub fn new(transport: T, region: &str, url: &str, timeout: Duration) -> RegionClient<T> {
        RegionClient {
            region: region.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            transport,
            timeout,
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `request` once to this region. A write without a key gets a fresh one
    /// (returned in the reply, to send again with [`Request::with_key`]).
    pub async fn send(&self, request: &Request) -> Result<Reply, TransportFailure> {
        let key = request.attempt_key();
        let started = Instant::now();
        let answer = self
            .transport
            .send(&self.url, request, key.as_deref(), self.timeout)
            .await?;
        Ok(Reply {
            answer,
            idempotency_key: key,
            latency: started.elapsed(),
        })
    }
}
