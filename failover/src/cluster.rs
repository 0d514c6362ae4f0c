//! A live deployment as the tool sees it: the ownership voters, each region node's
//! base URL, and the internal secret that signs calls to `/internal/v1/failover/*`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use internal_api::SignedCaller;
use ledger_wire::ownership::OwnershipMap;
use ownership_client::OwnershipClient;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::FailoverError;

/// Name the tool signs its internal calls with (logged by the nodes).
pub const CALLER: &str = "failover-tool";

/// Where the deployment is.
#[derive(Debug, Clone)]
pub struct Targets {
    pub voters: Vec<String>,
    /// Region name -> node base URL.
    pub nodes: BTreeMap<String, String>,
    /// Region name -> the region's replicator base URL (its dead-letter routes).
    pub replicators: BTreeMap<String, String>,
    pub secret: String,
    /// The public API key the drill's clients send (deployments with API keys).
    pub api_key: Option<String>,
    /// CA (PEM) of `https://` nodes; default: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The parts of a local deployment's state file (`ledger-local`) the tool needs.
#[derive(Debug, Deserialize)]
struct LocalState {
    secret: String,
    #[serde(default)]
    api_key: Option<String>,
    regions: Vec<LocalRegion>,
}

#[derive(Debug, Deserialize)]
struct LocalRegion {
    name: String,
    api_url: String,
    voter: String,
    replicator_metrics: String,
}

impl Targets {
    /// Reads `<dir>/deployment.json`, written by `ledger-local up`.
    pub fn from_local(dir: &Path) -> Result<Targets, FailoverError> {
        let path = dir.join("deployment.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            FailoverError::Invalid(format!(
                "cannot read {} ({e}); is a local deployment running there?",
                path.display()
            ))
        })?;
        let state: LocalState = serde_json::from_str(&text)
            .map_err(|e| FailoverError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(Targets {
            voters: state.regions.iter().map(|r| r.voter.clone()).collect(),
            replicators: state
                .regions
                .iter()
                .map(|r| (r.name.clone(), format!("http://{}", r.replicator_metrics)))
                .collect(),
            nodes: state
                .regions
                .into_iter()
                .map(|r| (r.name, r.api_url))
                .collect(),
            secret: state.secret,
            api_key: state.api_key,
            ca_file: None,
        })
    }
}

/// Connections to the ownership service and to every region node.
#[derive(Debug)]
pub struct Cluster {
    pub ownership: OwnershipClient,
    nodes: SignedCaller,
    replicators: SignedCaller,
}

impl Cluster {
    pub fn new(targets: &Targets, actor: &str) -> Result<Cluster, FailoverError> {
        if targets.secret.len() < 16 {
            return Err(FailoverError::Invalid(
                "the internal secret must be at least 16 characters (LEDGER_INTERNAL_SECRET)"
                    .into(),
            ));
        }
        let ownership = OwnershipClient::new(targets.voters.clone(), actor, &targets.secret)?;
        let mut nodes = SignedCaller::new(
            CALLER,
            &targets.secret,
            targets.nodes.clone(),
            Duration::from_millis(500),
        )
        .map_err(|e| FailoverError::Invalid(format!("HTTP client: {e}")))?;
        if targets
            .nodes
            .values()
            .any(|url| url.starts_with("https://"))
        {
            let tls = ledger_tls::roots(targets.ca_file.as_deref())
                .and_then(ledger_tls::client_config)
                .map_err(|e| FailoverError::Invalid(format!("nodes' TLS: {e}")))?;
            nodes = nodes
                .with_tls(tls)
                .map_err(|e| FailoverError::Invalid(format!("HTTP client: {e}")))?;
        }
        let replicators = SignedCaller::new(
            CALLER,
            &targets.secret,
            targets.replicators.clone(),
            Duration::from_millis(500),
        )
        .map_err(|e| FailoverError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Cluster {
            ownership,
            nodes,
            replicators,
        })
    }

    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.nodes.regions()
    }

    pub fn node_url(&self, region: &str) -> Result<&str, FailoverError> {
        self.nodes
            .node_url(region)
            .ok_or_else(|| FailoverError::UnknownRegion(region.to_owned()))
    }

    pub async fn map(&self) -> Result<OwnershipMap, FailoverError> {
        Ok(self.ownership.map().await?)
    }

    /// A signed GET of `/internal{path}` at `region`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        region: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<T, FailoverError> {
        signed_json(
            &self.nodes,
            region,
            reqwest::Method::GET,
            path,
            Vec::new(),
            timeout,
        )
        .await
    }

    /// A signed POST of `body` as JSON to `/internal{path}` at `region`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        region: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, FailoverError> {
        signed_json(
            &self.nodes,
            region,
            reqwest::Method::POST,
            path,
            encode(body)?,
            timeout,
        )
        .await
    }

    /// A signed GET of `/internal{path}` at `region`'s replicator.
    pub async fn replicator_get<T: DeserializeOwned>(
        &self,
        region: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<T, FailoverError> {
        signed_json(
            &self.replicators,
            region,
            reqwest::Method::GET,
            path,
            Vec::new(),
            timeout,
        )
        .await
    }

    /// A signed POST of `body` as JSON to `/internal{path}` at `region`'s replicator.
    pub async fn replicator_post<B: Serialize, T: DeserializeOwned>(
        &self,
        region: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, FailoverError> {
        signed_json(
            &self.replicators,
            region,
            reqwest::Method::POST,
            path,
            encode(body)?,
            timeout,
        )
        .await
    }

    /// Regions whose replicator the tool knows.
    pub fn replicator_regions(&self) -> impl Iterator<Item = &str> {
        self.replicators.regions()
    }
}

fn encode<B: Serialize>(body: &B) -> Result<Vec<u8>, FailoverError> {
    serde_json::to_vec(body).map_err(|e| FailoverError::Invalid(format!("encode request: {e}")))
}

/// A signed JSON call to `/internal{path}` of `region`'s process in `to`; anything but
/// a success is an error naming the region.
async fn signed_json<T: DeserializeOwned>(
    to: &SignedCaller,
    region: &str,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<T, FailoverError> {
    if to.node_url(region).is_none() {
        return Err(FailoverError::UnknownRegion(region.to_owned()));
    }
    let node_error = |detail: String| FailoverError::Node {
        region: region.to_owned(),
        detail,
    };
    let json = (
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    let answer = to
        .call(region, method, path, vec![json], Bytes::from(body), timeout)
        .await
        .map_err(|e| node_error(e.to_string()))?;
    if !answer.is_success() {
        return Err(node_error(format!(
            "{}: {}",
            answer.status,
            answer.detail()
        )));
    }
    serde_json::from_slice(&answer.body).map_err(|e| node_error(format!("unreadable answer: {e}")))
}
