//! Fixtures for the end-to-end tests: a real PostgreSQL cluster per test, a region node
//! on it (in-process through `region_node::run`, or as the real binary), and a small
//! HTTP client that speaks the public API.

pub mod client;
pub mod db;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use harness::{PgCluster, PgOptions, WorkDir};
use region_node::NodeConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::{ApiClient, Reply};

pub const REGION: &str = "eu-west";

/// One region: its PostgreSQL and a node serving on a loopback port. Dropping it stops
/// the node, then the cluster, then removes the directory (kept if the test failed).
pub struct TestRegion {
    pub api: ApiClient,
    pub database_url: String,
    pub address: SocketAddr,
    shutdown: CancellationToken,
    node: Option<JoinHandle<Result<(), region_node::NodeError>>>,
    pg: PgCluster,
    // Declared last: dropped after the cluster that lives in it.
    _dir: WorkDir,
}

impl TestRegion {
    pub async fn start(label: &str) -> anyhow::Result<Self> {
        Self::start_with(label, |_| {}).await
    }

    /// Starts a region, letting the test adjust the node's configuration.
    pub async fn start_with(
        label: &str,
        adjust: impl FnOnce(&mut NodeConfig),
    ) -> anyhow::Result<Self> {
        init_test_logging();
        let dir = WorkDir::temp(label).context("make test dir")?;
        let (pg, database_url) =
            PgCluster::start_with_database(dir.path(), &PgOptions::default(), "ledger")
                .await
                .context("start postgres")?;
        let mut config = NodeConfig::new(REGION, database_url.clone());
        config.shutdown_grace_ms = 2_000;
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind node listener")?;
        let address = listener.local_addr().context("read node address")?;
        let shutdown = CancellationToken::new();
        let node = tokio::spawn(region_node::run(listener, config, shutdown.clone()));
        let api = ApiClient::new(format!("http://{address}"))?;
        api.wait_ready(Duration::from_secs(30))
            .await
            .context("wait for the node to be ready")?;
        Ok(TestRegion {
            api,
            database_url,
            address,
            shutdown,
            node: Some(node),
            pg,
            _dir: dir,
        })
    }

    pub async fn db(&self) -> anyhow::Result<tokio_postgres::Client> {
        db::connect(&self.database_url).await
    }
}

/// Node logs go to the test's captured output (shown when a test fails); the level
/// comes from `LEDGER_LOG` (default `info`).
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Several tests in one process share the global subscriber; the first one sets it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

impl Drop for TestRegion {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(node) = self.node.take() {
            node.abort();
        }
        self.pg.stop();
    }
}
