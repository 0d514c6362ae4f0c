//! A three-region deployment per test (real PostgreSQL, Tansu, voters, proxies, nodes
//! and replicators, started by `chaos::Deployment`), in its own temp dir and port
//! range, stopped when the test ends.

#![allow(dead_code)]

pub mod browser;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chaos::demo::Client;
use chaos::{Deployment, UpOptions};
use harness::dirs::WorkDir;
use ownership_client::OwnershipClient;
use rust_decimal::Decimal;
use serde_json::{json, Value};

pub struct Regions {
    pub deployment: Deployment,
    _dir: WorkDir,
}

impl Drop for Regions {
    fn drop(&mut self) {
        // A region restarted by another process (`ledger-local restart`, the failover
        // tool's drill hooks) recorded its new pids in the state file.
        // Every restart saves the state, so the saved one is the most recent.
        match Deployment::load(&self.deployment.data_dir) {
            Ok(Some(saved)) => saved.stop(),
            _ => self.deployment.stop(),
        }
    }
}

/// Where the workspace's binaries are (`ledger-local`, `failover`, the services).
pub fn bin_dir() -> PathBuf {
    // target/<profile>/deps/<test> -> target/<profile>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_owned()
}

impl Regions {
    pub async fn start(label: &str, node_env: &[(&str, &str)]) -> anyhow::Result<Regions> {
        Regions::start_n(label, 3, node_env).await
    }

    /// A deployment of `count` regions.
    pub async fn start_n(
        label: &str,
        count: usize,
        node_env: &[(&str, &str)],
    ) -> anyhow::Result<Regions> {
        Regions::start_on(label, count, node_env, false).await
    }

    /// Three regions, each in its own network namespace (every link can be cut).
    pub async fn start_in_namespaces(label: &str) -> anyhow::Result<Regions> {
        Regions::start_on(label, 3, &[], true).await
    }

    /// Three regions in namespaces with the built-in geography between them (`up
    /// --geo`): round trips of 70, 120 and 190 ms on every link.
    pub async fn start_geo(label: &str) -> anyhow::Result<Regions> {
        let names: Vec<String> = chaos::REGION_NAMES[..3]
            .iter()
            .map(|n| (*n).to_owned())
            .collect();
        let geography = chaos::geography::Geography::earth(&names)?;
        Regions::start_with(label, 3, &[], |options| {
            options.network = chaos::Network::namespaces_for(options.base_port);
            options.geography = Some(geography);
        })
        .await
    }

    /// Three regions and a Prometheus scraping them (`up --monitoring`).
    pub async fn start_monitored(label: &str) -> anyhow::Result<Regions> {
        Regions::start_with(label, 3, &[], |options| options.monitoring = true).await
    }

    /// Three regions whose public API needs a key (`up --api-keys`); [`Regions::client`]
    /// sends the deployment's key.
    pub async fn start_keyed(label: &str) -> anyhow::Result<Regions> {
        Regions::start_with(label, 3, &[], |options| options.api_keys = true).await
    }

    async fn start_on(
        label: &str,
        count: usize,
        node_env: &[(&str, &str)],
        namespaces: bool,
    ) -> anyhow::Result<Regions> {
        Regions::start_with(label, count, node_env, |options| {
            if namespaces {
                options.network = chaos::Network::namespaces_for(options.base_port);
            }
        })
        .await
    }

    async fn start_with(
        label: &str,
        count: usize,
        node_env: &[(&str, &str)],
        configure: impl FnOnce(&mut UpOptions),
    ) -> anyhow::Result<Regions> {
        let dir = WorkDir::temp(label)?;
        // A block of ports claimed by this test process (harness::ports): a deployment of
        // a test running beside this one cannot pick the same ports (nor, in
        // namespaces, the same names and subnet, which derive from the block).
        let base = harness::free_block(chaos::topology::port_span(count))?;
        let mut options = UpOptions::new(count, base, bin_dir());
        options.slot_count = 64;
        options.node_env = node_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        configure(&mut options);
        let deployment = Deployment::up(&dir.join("deployment"), &options)
            .await
            .with_context(|| format!("start {count} regions"))?;
        Ok(Regions {
            deployment,
            _dir: dir,
        })
    }

    pub fn name(&self, i: usize) -> String {
        self.deployment.regions[i].name.clone()
    }

    pub fn client(&self, i: usize) -> Client {
        let r = &self.deployment.regions[i];
        Client::new(&r.name, &r.api_url, self.deployment.api_key.as_deref())
            .expect("build an HTTP client")
    }

    pub fn ownership(&self) -> OwnershipClient {
        let voters = self
            .deployment
            .regions
            .iter()
            .map(|r| r.voter.clone())
            .collect();
        OwnershipClient::new(voters, "test", &self.deployment.secret).expect("ownership client")
    }

    pub async fn db(&self, i: usize) -> anyhow::Result<tokio_postgres::Client> {
        let url = &self.deployment.regions[i].database_url;
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connect {url}"))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Opens an EUR account homed in region `home`, asking region `via`; funds it.
    pub async fn open(&self, via: usize, home: usize, funds: &str) -> anyhow::Result<String> {
        let client = self.client(via);
        let body = json!({"currency": "EUR", "home_region": self.name(home)});
        let (sample, account) = client
            .post("open", "/v1/accounts", &body, None, None)
            .await?;
        anyhow::ensure!(sample.status == 201, "open failed: {account}");
        let id = account["id"].as_str().context("id")?.to_owned();
        if funds != "0" {
            let (status, body) = self.deposit(via, &id, funds).await?;
            anyhow::ensure!(status == 201, "funding failed: {body}");
        }
        Ok(id)
    }

    /// A deposit asked of region `via`: the answer's status and body.
    pub async fn deposit(
        &self,
        via: usize,
        account: &str,
        amount: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let (sample, body) = self
            .client(via)
            .post(
                "deposit",
                &format!("/v1/accounts/{account}/deposits"),
                &json!({ "amount": amount }),
                None,
                None,
            )
            .await?;
        Ok((sample.status, body))
    }

    /// A transfer asked of region `via`: the answer's status and body.
    pub async fn transfer(
        &self,
        via: usize,
        from: &str,
        to: &str,
        amount: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let (sample, body) = self
            .client(via)
            .post(
                "transfer",
                "/v1/transfers",
                &json!({ "from": from, "to": to, "amount": amount }),
                None,
                None,
            )
            .await?;
        Ok((sample.status, body))
    }

    /// `id -> (balance, seq)` of every account in region `i`'s database.
    pub async fn accounts(&self, i: usize) -> anyhow::Result<BTreeMap<String, (Decimal, i64)>> {
        let db = self.db(i).await?;
        let rows = db
            .query(
                "SELECT ledger.account_id_text(id), balance, seq FROM ledger.accounts",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    (r.get::<_, Decimal>(1), r.get::<_, i64>(2)),
                )
            })
            .collect())
    }

    /// Waits until the listed regions hold identical account states; on a timeout, says
    /// which accounts differ and what each region still holds back.
    pub async fn wait_converged(
        &self,
        regions: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<BTreeMap<String, (Decimal, i64)>> {
        let converged = eventually("regions converge", timeout, || async {
            let mut states = Vec::new();
            for i in regions {
                states.push(self.accounts(*i).await.ok()?);
            }
            states
                .windows(2)
                .all(|w| w[0] == w[1])
                .then(|| states.remove(0))
        })
        .await;
        match converged {
            Ok(states) => Ok(states),
            Err(error) => {
                let why = self.divergence(regions).await;
                Err(error.context(why))
            }
        }
    }

    /// The accounts whose states differ between `regions` (a few), and per region its
    /// unpublished outbox rows and events waiting for a gap.
    async fn divergence(&self, regions: &[usize]) -> String {
        let mut states = Vec::new();
        let mut backlog = Vec::new();
        for &i in regions {
            states.push(self.accounts(i).await.unwrap_or_default());
            let counts = async {
                let db = self.db(i).await?;
                let row = db
                    .query_one(
                        "SELECT (SELECT count(*) FROM ledger.outbox WHERE published_at IS NULL),
                                (SELECT count(*) FROM ledger.pending_events)",
                        &[],
                    )
                    .await?;
                anyhow::Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
            }
            .await;
            backlog.push(format!("{}: {counts:?}", self.name(i)));
        }
        let ids: std::collections::BTreeSet<&String> =
            states.iter().flat_map(|s| s.keys()).collect();
        let differing: Vec<String> = ids
            .into_iter()
            .filter(|id| states.windows(2).any(|w| w[0].get(*id) != w[1].get(*id)))
            .take(3)
            .map(|id| {
                let per_region: Vec<String> = regions
                    .iter()
                    .zip(&states)
                    .map(|(&i, s)| format!("{}={:?}", self.name(i), s.get(id)))
                    .collect();
                format!("{id}: {}", per_region.join(" "))
            })
            .collect();
        format!(
            "differing accounts (balance, seq): {differing:?}; (unpublished outbox rows, pending events): {backlog:?}"
        )
    }
}

/// Polls `check` until it yields `Some`, or fails after `timeout` (harness's one wait
/// helper, with the test's name for what it waited for).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    harness::wait_until(timeout, Duration::from_millis(50), check)
        .await
        .with_context(|| format!("{what}: not within {timeout:?}"))
}

pub fn amount(value: &Value, field: &str) -> Decimal {
    value[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}
