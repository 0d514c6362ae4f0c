//! Clients in places: one client process per location, started inside the network
//! namespace of the region it sits next to, so under a geography (`up --geo`) it is
//! as far from every other region as its own region is. Each sends reads and writes
//! through `ledger-client` (nearest healthy region by measured latency, retries under
//! the same Idempotency-Key); halfway through, the last region is killed. The summary:
//! per location the latencies before the kill, which regions served, and after the
//! kill the time to the first success and the errors.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ledger_client::{Client, HttpTransport, Request, RetryConfig, RoutingConfig};
use ledger_wire::api::AmountRequest;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::demo;
use crate::Deployment;

/// One request of a location's client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocationSample {
    /// When it was sent, ms since the Unix epoch (one clock: one machine).
    pub sent_ms: u64,
    pub write: bool,
    /// The account read or written.
    #[serde(default)]
    pub account: Option<String>,
    /// Answered 2xx.
    pub ok: bool,
    pub latency_ms: f64,
    /// The region that answered (none: no region could, within the budget).
    pub region: Option<String>,
    pub attempts: u32,
    /// The status answered, if any region answered.
    #[serde(default)]
    pub status: Option<u16>,
    /// What went wrong, when no region answered 2xx: the problem's body, or the
    /// client's error.
    #[serde(default)]
    pub error: Option<String>,
}

impl LocationSample {
    /// Whether its answer came before `ms` (since the Unix epoch).
    pub fn answered_before(&self, ms: u64) -> bool {
        (self.sent_ms as f64 + self.latency_ms) < ms as f64
    }
}

/// Now, in ms since the Unix epoch (the one clock every process of a run shares).
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The client of one location (run inside its namespace): `rate` requests a second
/// for `duration`, half reads of any account, half deposits to `writes`; one JSON
/// sample per line on stdout.
pub async fn run_client(
    regions: Vec<(String, String)>,
    api_key: Option<String>,
    reads: Vec<String>,
    writes: Vec<String>,
    duration: Duration,
    rate: u32,
) -> anyhow::Result<()> {
    let transport = HttpTransport::new(api_key).context("build the HTTP client")?;
    let client = Arc::new(Client::new(
        transport,
        regions,
        RoutingConfig::default(),
        RetryConfig::default(),
    ));
    let pause = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let until = Instant::now() + duration;
    // Measure every region before the first request, and again every second.
    client.probe_all().await;
    let probes = client.run_probes(PROBE_EVERY, tokio::time::sleep_until(until.into()));
    let requests = open_loop(&reads, &writes, pause, until, |write, account| {
        one_request(Arc::clone(&client), write, account)
    });
    let ((), sent) = tokio::join!(probes, requests);
    sent
}

/// How long the accounts opened for the run may take to reach every region.
const REPLICATED: Duration = Duration::from_secs(30);

/// How often a location's client probes every region's `/readyz`.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Sends one request every `pause` until `until`, each on its own task: open loop, as
/// many independent users would, so one request stuck retrying (a write to an account
/// whose home is gone) holds up no other. Half are writes to one of `writes` (if any),
/// the rest reads of one of `reads`; `request(write, account)` makes each one. Shared
/// by this module's clients and the active-passive comparison's.
pub async fn open_loop<A, F, Fut>(
    reads: &[A],
    writes: &[A],
    pause: Duration,
    until: Instant,
    request: F,
) -> anyhow::Result<()>
where
    A: Clone,
    F: Fn(bool, A) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut in_flight = tokio::task::JoinSet::new();
    while Instant::now() < until {
        let (write, account) = {
            let mut rng = rand::rng();
            let write = rng.random_bool(0.5) && !writes.is_empty();
            let pool = if write { writes } else { reads };
            (
                write,
                pool.choose(&mut rng).cloned().context("no accounts")?,
            )
        };
        in_flight.spawn(request(write, account));
        tokio::time::sleep(pause).await;
        while let Some(done) = in_flight.try_join_next() {
            done.context("a request task failed")??;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done.context("a request task failed")??;
    }
    Ok(())
}

/// Waits for each location's client and reads the samples it printed.
/// A client process run inside `namespace` (next to a region): `bin` with `leading`
/// arguments, sending `rate` requests a second for `seconds`, its samples on stdout
/// for [`collect_samples`], killed if dropped. Callers add their own arguments.
pub fn client_process(
    namespace: &str,
    bin: &std::path::Path,
    leading: &[&str],
    seconds: u64,
    rate: u32,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", namespace])
        .arg(bin)
        .args(leading)
        .args(["--seconds", &seconds.to_string()])
        .args(["--rate", &rate.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    command
}

pub async fn collect_samples(
    children: Vec<(String, tokio::process::Child)>,
) -> anyhow::Result<BTreeMap<String, Vec<LocationSample>>> {
    let mut by_location = BTreeMap::new();
    for (name, child) in children {
        let output = child
            .wait_with_output()
            .await
            .with_context(|| format!("wait for the client next to {name}"))?;
        let samples = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        by_location.insert(name, samples);
    }
    Ok(by_location)
}

async fn one_request(
    client: Arc<Client<HttpTransport>>,
    write: bool,
    account: String,
) -> anyhow::Result<()> {
    let sent_ms = epoch_ms();
    let started = Instant::now();
    let answer = if write {
        let body = AmountRequest {
            amount: "1.00".to_owned(),
            reference: None,
        };
        client.send(Request::deposit(&account, &body)).await
    } else {
        client.read_account(&account).await
    };
    let sample = LocationSample {
        sent_ms,
        write,
        account: Some(account),
        ok: answer.as_ref().is_ok_and(|a| a.status < 300),
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
        region: answer.as_ref().ok().map(|a| a.region.clone()),
        attempts: answer.as_ref().map_or(0, |a| a.attempts),
        status: answer.as_ref().ok().map(|a| a.status),
        error: match &answer {
            Ok(a) if a.status < 300 => None,
            Ok(a) => Some(a.body.to_string()),
            Err(e) => Some(e.to_string()),
        },
    };
    println!("{}", serde_json::to_string(&sample)?);
    Ok(())
}

/// What every location's client saw, and when which region was killed.
#[derive(Debug, Clone)]
pub struct LocationsRun {
    pub by_location: BTreeMap<String, Vec<LocationSample>>,
    pub kill_ms: u64,
    pub victim: String,
    /// Each account's home region when the run started.
    pub homes: BTreeMap<String, String>,
}

impl LocationsRun {
    /// Time from the kill to the first success of a request sent after it, for
    /// `location`.
    pub fn kill_to_success(&self, location: &str) -> Option<f64> {
        self.kill_to(location, |_| true)
    }

    /// [`LocationsRun::kill_to_success`] of a write: how long writes stopped.
    pub fn kill_to_write(&self, location: &str) -> Option<f64> {
        self.kill_to(location, |s| s.write)
    }

    /// [`LocationsRun::kill_to_write`] to an account whose home was `home` at the start.
    pub fn kill_to_write_homed_in(&self, location: &str, home: &str) -> Option<f64> {
        self.kill_to(location, |s| {
            s.write
                && s.account
                    .as_ref()
                    .and_then(|a| self.homes.get(a))
                    .is_some_and(|h| h == home)
        })
    }

    fn kill_to(&self, location: &str, counts: impl Fn(&LocationSample) -> bool) -> Option<f64> {
        self.by_location
            .get(location)?
            .iter()
            // Sent after the kill: one in flight when it came may have been answered
            // before the region died.
            .filter(|s| s.ok && counts(s) && s.sent_ms >= self.kill_ms)
            .map(|s| s.sent_ms as f64 + s.latency_ms)
            .map(|done| done - self.kill_ms as f64)
            .reduce(f64::min)
    }

    /// Requests of `location` no region answered with 2xx.
    pub fn errors(&self, location: &str) -> usize {
        self.by_location
            .get(location)
            .map_or(0, |samples| samples.iter().filter(|s| !s.ok).count())
    }

    /// Each failed request of `location`, described: when (relative to the kill),
    /// what, where and why.
    pub fn failures(&self, location: &str) -> Vec<String> {
        let Some(samples) = self.by_location.get(location) else {
            return Vec::new();
        };
        samples
            .iter()
            .filter(|s| !s.ok)
            .map(|s| {
                format!(
                    "{:+} ms from the kill, {} of {}: {:?} {}",
                    s.sent_ms as i64 - self.kill_ms as i64,
                    if s.write { "a write" } else { "a read" },
                    s.region.as_deref().unwrap_or("no region"),
                    s.status,
                    s.error.as_deref().unwrap_or("")
                )
            })
            .collect()
    }
}

/// Which accounts each location's client writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Every account homed in a region that survives: the clients' failover is
    /// measured, not ownership's.
    SurvivorsAccounts,
    /// The accounts homed in the location's own region, as users near their accounts'
    /// home would: the victim's location then waits for a promote
    /// (`active-passive-bench` runs one).
    OwnAccounts,
}

/// Runs a client next to every region of `deployment` (in namespaces) for `seconds`
/// and kills region `victim` halfway; reads go to every account, writes as `writes`
/// says.
///
/// A killed region's geography loops (its pairs with higher-indexed regions) die with
/// it, which only touches links to the dead region. If its voter leads, every region's
/// lease renewals wait for the other two to elect; the geography's lease ttl covers
/// that (`Geography::voter_timings`).
pub async fn run(
    deployment: &Deployment,
    seconds: u64,
    rate: u32,
    victim: &str,
    writes: Writes,
) -> anyhow::Result<LocationsRun> {
    anyhow::ensure!(
        deployment.network.is_namespaces(),
        "clients in places need regions in namespaces (`ledger-local up --geo`)"
    );
    let names: Vec<String> = deployment.regions.iter().map(|r| r.name.clone()).collect();
    let setup: Vec<demo::Client> = deployment
        .regions
        .iter()
        .map(|r| demo::Client::new(&r.name, &r.api_url, deployment.api_key.as_deref()))
        .collect::<anyhow::Result<_>>()?;
    let accounts = demo::open_accounts(&setup, &names, 2).await?;
    // Every region holds every account (replicated) before a client reads it there.
    for client in &setup {
        for account in &accounts {
            let path = format!("/v1/accounts/{}", account.id);
            let held = harness::wait::wait_until(REPLICATED, Duration::from_millis(50), || {
                let path = path.clone();
                async move {
                    let (sample, _) = client.get("read", &path).await.ok()?;
                    (sample.status == 200).then_some(())
                }
            })
            .await;
            held.with_context(|| {
                format!(
                    "{} does not hold account {} after {REPLICATED:?}",
                    client.region, account.id
                )
            })?;
        }
    }
    let victim = deployment.region(victim)?.name.clone();
    let reads: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    let writes_of = |location: &str| -> Vec<String> {
        accounts
            .iter()
            .filter(|a| match writes {
                Writes::SurvivorsAccounts => a.home != victim,
                Writes::OwnAccounts => a.home == location,
            })
            .map(|a| a.id.clone())
            .collect()
    };
    let urls: Vec<String> = deployment
        .regions
        .iter()
        .map(|r| format!("{}={}", r.name, r.api_url))
        .collect();
    let bin = deployment.bin_dir.join("ledger-local");
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let namespace = deployment.network.namespace(i).context("namespace")?;
        let mut command = client_process(&namespace, &bin, &["location-client"], seconds, rate);
        command
            .args(["--regions", &urls.join(",")])
            .args(["--reads", &reads.join(",")])
            .args(["--writes", &writes_of(name).join(",")]);
        if let Some(key) = &deployment.api_key {
            command.env("LEDGER_API_KEY", key);
        }
        let child = command
            .spawn()
            .with_context(|| format!("start the client next to {name}"))?;
        children.push((name.clone(), child));
    }
    println!(
        "clients next to {} ({rate}/s each, half reads, half deposits) for {seconds} s; {victim} is killed after {} s",
        names.join(", "),
        seconds / 2
    );
    tokio::time::sleep(Duration::from_secs(seconds / 2)).await;
    let kill_ms = epoch_ms();
    deployment.kill_region(&victim)?;
    let by_location = collect_samples(children).await?;
    Ok(LocationsRun {
        by_location,
        kill_ms,
        victim,
        homes: accounts.into_iter().map(|a| (a.id, a.home)).collect(),
    })
}

/// `p50/p99` of the samples' latencies in ms, `-` for none.
pub fn percentiles(samples: &[&LocationSample]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
    if ms.is_empty() {
        return "-".to_owned();
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    format!("{:.0}/{:.0}", at(0.5), at(0.99))
}

/// Per location: p50/p99 ms of reads and writes answered before the kill, the regions
/// that served them, and after the kill the first success and the errors.
pub fn print_summary(run: &LocationsRun) {
    println!(
        "\n{:<10} {:>12} {:>12}  {:<36} {:>16} {:>14} {:>7}",
        "location",
        "reads p50/99",
        "writes p50/99",
        "served by (before the kill)",
        "kill->success ms",
        "kill->write ms",
        "errors"
    );
    for (location, samples) in &run.by_location {
        let before: Vec<&LocationSample> = samples
            .iter()
            .filter(|s| s.ok && s.answered_before(run.kill_ms))
            .collect();
        let reads: Vec<&LocationSample> = before.iter().copied().filter(|s| !s.write).collect();
        let writes: Vec<&LocationSample> = before.iter().copied().filter(|s| s.write).collect();
        let mut served: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &before {
            *served
                .entry(s.region.as_deref().unwrap_or("-"))
                .or_default() += 1;
        }
        let served = served
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let ms = |value: Option<f64>| value.map_or("none".to_owned(), |ms| format!("{ms:.0}"));
        println!(
            "{:<10} {:>12} {:>12}  {:<36} {:>16} {:>14} {:>7}",
            location,
            percentiles(&reads),
            percentiles(&writes),
            served,
            ms(run.kill_to_success(location)),
            ms(run.kill_to_write(location)),
            run.errors(location)
        );
    }
    println!(
        "(errors: requests no region answered with 2xx within the client's 5 s budget; {} was the region killed)",
        run.victim
    );
    for location in run.by_location.keys() {
        for failure in run.failures(location) {
            println!("  {location}: {failure}");
        }
    }
}
