//! The usual alternative's database: one PostgreSQL primary in the deployment's first
//! region and a streaming standby in its second ([`Replication`]: asynchronous, the
//! usual choice, or synchronous), each inside its region's namespace (so the geography's distances apply to them as to ours), holding
//! the ledger's schema and running the ledger's own SQL functions. The primary holds
//! every slot's lease for ever: one writer, no ownership service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use harness::{PgCluster, PgOptions};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio_postgres::NoTls;

use crate::Deployment;

/// How the primary's commits reach the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// A commit is acknowledged once the primary has it; the standby follows (the
    /// usual setup: an acknowledged write still on the wire is lost with the region).
    Asynchronous,
    /// A commit waits until the standby has flushed it (`synchronous_standby_names`):
    /// nothing acknowledged is lost, and every write pays the round trip to the standby.
    Synchronous,
}

impl Replication {
    pub fn describe(self) -> &'static str {
        match self {
            Replication::Asynchronous => "primary + asynchronous standby",
            Replication::Synchronous => "primary + synchronous standby",
        }
    }
}

/// One of the two servers: where it runs and how to reach it.
#[derive(Debug, Clone)]
pub struct Server {
    pub region: String,
    pub host: String,
    pub port: u16,
    pub pid: u32,
}

impl Server {
    /// `region=host:port`, as the clients take it.
    pub fn spec(&self) -> String {
        format!("{}={}:{}", self.region, self.host, self.port)
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/ledger",
            harness::pg::SUPERUSER,
            self.host,
            self.port
        )
    }
}

#[derive(Debug)]
pub struct ActivePassive {
    pub primary: Server,
    pub standby: Server,
    pub dir: PathBuf,
}

/// The ids of the run's accounts: spread over slots the way the bench's are.
pub fn account_ids(count: i64) -> Vec<i64> {
    (1..=count).map(|n| (n % 4096) * (1 << 48) + n).collect()
}

impl ActivePassive {
    /// Starts the primary in region 0 with `accounts` empty accounts, then the standby
    /// in region 1 from a base backup, replicating as `replication` says.
    pub async fn start(
        deployment: &Deployment,
        dir: &Path,
        accounts: &[i64],
        replication: Replication,
    ) -> anyhow::Result<ActivePassive> {
        anyhow::ensure!(
            deployment.network.is_namespaces() && deployment.regions.len() >= 2,
            "the comparison needs two regions in namespaces (`ledger-local up --geo`)"
        );
        let topology = deployment.topology();
        let server_options = |i: usize| PgOptions {
            durable: true,
            port: Some(topology.active_passive_pg(i)),
            own_process_group: true,
            host: Some(deployment.network.host(i)),
            namespace: deployment.network.namespace(i),
            ..PgOptions::default()
        };
        let primary_dir = dir.join("primary");
        harness::dirs::make_shared_dir(&primary_dir)
            .with_context(|| format!("create {}", primary_dir.display()))?;
        let (pg, url) =
            PgCluster::start_with_database(&primary_dir, &server_options(0), "ledger").await?;
        let primary = Server {
            region: deployment.regions[0].name.clone(),
            host: deployment.network.host(0),
            port: pg.port(),
            pid: pg.detach().context("the primary's pid")?,
        };
        // From here on a failure must not leave the primary running.
        let standby = async {
            seed(&url, accounts).await?;
            let standby = start_standby(deployment, dir, &primary, server_options(1)).await?;
            if replication == Replication::Synchronous {
                // After the base backup: the standby, once promoted, waits for nobody.
                if let Err(e) = make_synchronous(&url).await {
                    let _ = kill_group(standby.pid);
                    return Err(e);
                }
            }
            Ok(standby)
        };
        match standby.await {
            Ok(standby) => Ok(ActivePassive {
                primary,
                standby,
                dir: dir.to_owned(),
            }),
            Err(e) => {
                let _ = kill_group(primary.pid);
                Err(e)
            }
        }
    }

    /// SIGKILL of the primary's postmaster and every backend: its region is lost.
    pub fn kill_primary(&self) -> anyhow::Result<()> {
        kill_group(self.primary.pid)
    }

    /// Stops both servers (the standby may be the primary by now).
    pub fn stop(&self) {
        for server in [&self.primary, &self.standby] {
            let _ = kill_group(server.pid);
        }
    }
}

/// The standby in region 1, from a base backup of `primary`; it then streams from the
/// primary across the link.
async fn start_standby(
    deployment: &Deployment,
    dir: &Path,
    primary: &Server,
    options: PgOptions,
) -> anyhow::Result<Server> {
    let standby_dir = dir.join("standby");
    harness::dirs::make_shared_dir(&standby_dir)
        .with_context(|| format!("create {}", standby_dir.display()))?;
    // Taken from outside the namespaces: the copy is setup, not part of the
    // comparison, and through the geography's delay loop it took minutes under load.
    harness::pg::base_backup(&standby_dir, &primary.host, primary.port, None)?;
    let pg = PgCluster::start(&standby_dir, &options).await?;
    Ok(Server {
        region: deployment.regions[1].name.clone(),
        host: deployment.network.host(1),
        port: pg.port(),
        pid: pg.detach().context("the standby's pid")?,
    })
}

/// Makes the primary wait for its standby's flush before acknowledging a commit, and
/// waits until the standby streams synchronously.
async fn make_synchronous(primary_url: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(primary_url, NoTls)
        .await
        .context("connect to the primary")?;
    tokio::spawn(connection);
    // Two statements: ALTER SYSTEM refuses to run inside a (multi-statement) transaction.
    client
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        .await
        .context("make the standby synchronous")?;
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .context("reload the primary's configuration")?;
    let synchronous = harness::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let row = client
                .query_opt(
                    "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'",
                    &[],
                )
                .await
                .ok()?;
            row.map(|_| ())
        },
    )
    .await;
    synchronous.context("the standby did not stream synchronously within 30 s")
}

fn kill_group(pid: u32) -> anyhow::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
    match killpg(pid, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => return Err(e).context("kill the server's process group"),
    }
    // Ours to reap: we started it.
    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    Ok(())
}

/// The schema, empty accounts homed in the primary, and every slot's lease for ever.
async fn seed(url: &str, accounts: &[i64]) -> anyhow::Result<()> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connect to the primary")?;
    tokio::spawn(connection);
    ledger_schema::migrate(&mut client)
        .await
        .context("create the ledger schema on the primary")?;
    client
        .execute(
            "INSERT INTO ledger.accounts (id, currency, scale, balance, seq, epoch, home_region,
                                          created_at, updated_at)
             SELECT id, 'EUR', 2, 0, 0, 1, 'primary', now(), now() FROM unnest($1::bigint[]) AS id",
            &[&accounts],
        )
        .await
        .context("open the accounts")?;
    client
        .execute(
            "INSERT INTO ledger.slot_leases (slot, epoch, expires_at, valid_from)
             SELECT DISTINCT slot, 1, 'infinity'::timestamptz, '-infinity'::timestamptz
             FROM ledger.accounts",
            &[],
        )
        .await
        .context("grant the primary every slot")?;
    Ok(())
}

/// Whether `server` answers a query within `within`.
pub async fn answers(server: &Server, within: Duration) -> bool {
    let probe = async {
        let (client, connection) = tokio_postgres::connect(&server.url(), NoTls).await.ok()?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.ok()
    };
    matches!(tokio::time::timeout(within, probe).await, Ok(Some(_)))
}
