//! `ledger-local`: start, inspect, demo and stop a multi-region ledger on this machine.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chaos::demo::{self, Client};
use chaos::forwarding;
use chaos::{Deployment, UpOptions, DEFAULT_BASE_PORT};
use clap::{Parser, Subcommand};
use harness::process::pid_alive;

#[derive(Debug, Parser)]
#[command(about = "Run a multi-region ledger deployment on this machine")]
struct Cli {
    /// Where regions keep their data and the deployment's state file.
    #[arg(
        long,
        env = "LEDGER_LOCAL_DIR",
        default_value = ".local",
        global = true
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Start the regions and wait until every node is ready and holds its lease.
    Up {
        #[arg(long, default_value_t = 3)]
        regions: usize,
        /// Region i uses ports base+40i .. base+40i+39 (see `chaos::topology`).
        #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
        base_port: u16,
        /// Ownership lease ttl in ms.
        #[arg(long, default_value_t = 2_000)]
        lease_ttl_ms: u64,
        /// Run each region in its own network namespace (needs root, `ip` and
        /// `iptables`), so `partition` can cut every link, Kafka and Raft included.
        #[arg(long)]
        namespaces: bool,
        /// Also start a Prometheus (Debian's package) scraping every process with the
        /// shipped alert rules loaded; the dashboard is observability/grafana/ledger.json.
        #[arg(long)]
        monitoring: bool,
        /// Put the public API behind API keys: one key (tenant `local`, read and
        /// write) is made, shown by `status` and kept in the state file; its hash goes
        /// into `<data-dir>/api-keys.json`, which `failover keys` manages.
        #[arg(long)]
        api_keys: bool,
        /// Put real distance between the regions, on every link (implies
        /// `--namespaces`): round trips eu-west<->us-east 70 ms, eu-west<->ap-south
        /// 120 ms, us-east<->ap-south 190 ms, ±2 ms; the voters' heartbeat, election
        /// timeouts and the lease ttl grow to suit (`status` shows them).
        #[arg(long)]
        geo: bool,
    },
    /// Stop every process of the deployment (data is kept).
    Down,
    /// Show the regions, their processes and endpoints.
    Status,
    /// SIGKILL every process of one region (its process group), or with `--process`
    /// only that one (`broker`, `voter`, `proxy`, `node`, `replicator`, `postgres`, the
    /// postmaster with every backend). A region may be
    /// named `leader`: the one whose voter leads the ownership cluster.
    Kill {
        region: String,
        #[arg(long)]
        process: Option<String>,
        /// First hold the region's replicator (SIGSTOP) for this long, so that the
        /// writes it acknowledges meanwhile die unpublished: the kill then certainly
        /// leaves a tail for reconciliation.
        #[arg(long, default_value_t = 0)]
        unpublished_tail_ms: u64,
    },
    /// SIGSTOP a region's node (or `--process`) for `--ms`, then SIGCONT it (a pause
    /// past its lease). `leader` names the region whose voter leads.
    Pause {
        region: String,
        #[arg(long, default_value_t = 3_000)]
        ms: u64,
        #[arg(long, default_value = "node")]
        process: String,
    },
    /// Start one killed process of a region again (`kill --process`'s heal).
    Start { region: String, process: String },
    /// Start a killed region again on its data; it comes back deposed if promoted.
    Restart { region: String },
    /// Cut a region off from every other region, every link (`up --namespaces` only);
    /// with `--to`, only the connections `region` opens to that one region.
    Partition {
        region: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// A flaky link: each TCP packet between the region and the others is answered by
    /// a reset with this probability (`up --namespaces` only).
    Flaky {
        region: String,
        #[arg(long, default_value_t = 0.02)]
        probability: f64,
    },
    /// A slow link: the region's traffic with the others through a token bucket of
    /// `--kbit` kbit/s each way (`up --namespaces` only).
    Slow {
        region: String,
        #[arg(long, default_value_t = 256)]
        kbit: u32,
    },
    /// A long link: every packet between the region and the others held `--ms` (±
    /// up to `--jitter-ms`) each way, so a round trip to it grows by twice that, on
    /// every link, Kafka and Raft included (`up --namespaces` only). `leader` names
    /// the region whose voter leads.
    Delay {
        region: String,
        #[arg(long, default_value_t = 100)]
        ms: u64,
        #[arg(long, default_value_t = 20)]
        jitter_ms: u64,
        /// Seed of the jitter draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Restart a region's node with its clocks (monotonic included) running at `--rate`
    /// through libfaketime: 0.99 is 1% slow, the node's configured maximum drift;
    /// `--rate 1` restarts it on real time.
    Drift {
        region: String,
        #[arg(long)]
        rate: f64,
    },
    /// End every partition, flaky, long and slow link.
    Heal,
    /// CPU used by each process kind of each region (PostgreSQL with its backends)
    /// over `--seconds`, in cores: what the deployment costs idle or under traffic.
    Cpu {
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Against the running deployment: traffic from clients near each region, where
    /// each request was served, replication lag, then SIGKILL of the last region and
    /// reads from the survivors.
    Traffic {
        /// Seconds of traffic before the kill.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests per second per client.
        #[arg(long, default_value_t = 20)]
        rate: u32,
    },
    /// Against a running deployment in namespaces (best with `up --geo`): a client
    /// process next to each region (in its namespace) using ledger-client, so each
    /// finds its nearest healthy region; the last region is killed halfway. Prints per
    /// location latencies, serving regions, time from the kill to a success, errors.
    Locations {
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Requests per second per location.
        #[arg(long, default_value_t = 10)]
        rate: u32,
        /// The region killed halfway (default: the last one). `leader` names the
        /// region whose voter leads: every region's writes then wait for an election.
        #[arg(long)]
        kill: Option<String>,
    },
    /// Against the running deployment: what forwarding itself costs. Deposits to one
    /// account, one at a time, alternately at its home and through another region;
    /// once per gap between requests, with `/healthz` at the home as the machine's
    /// cost of waking a process after that gap.
    Forwarding {
        /// Requests each way per gap.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Idle time before each request, ms (one run per value).
        #[arg(long, value_delimiter = ',', default_value = "0,50")]
        gaps_ms: Vec<u64>,
        /// The account's home (default: the first region).
        #[arg(long)]
        home: Option<String>,
        /// The region the forwarded deposits are sent to (default: the second).
        #[arg(long)]
        via: Option<String>,
        /// Also measure with every replicator stopped (SIGSTOP, then SIGCONT): the hop
        /// without the replication each deposit causes competing for the cores.
        #[arg(long)]
        hold_replication: bool,
    },
    /// One location's client (what `locations` runs in each namespace): samples as
    /// JSON lines on stdout.
    #[command(hide = true)]
    LocationClient {
        /// `name=url,...` of every region.
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        reads: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        writes: Vec<String>,
        #[arg(long)]
        seconds: u64,
        #[arg(long)]
        rate: u32,
        #[arg(long, env = "LEDGER_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// The main job: up, traffic from clients near each region, replication lag, kill
    /// one region, reads from the survivors, down.
    Demo {
        #[arg(long, default_value_t = 3)]
        regions: usize,
        #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
        base_port: u16,
        /// Seconds of traffic before the kill.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests per second per client.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Leave the deployment running at the end.
        #[arg(long)]
        keep: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Action::Up {
            regions,
            base_port,
            lease_ttl_ms,
            namespaces,
            monitoring,
            api_keys,
            geo,
        } => {
            let mut options = UpOptions::new(regions, base_port, bin_dir()?);
            options.lease_ttl_ms = lease_ttl_ms;
            options.monitoring = monitoring;
            options.api_keys = api_keys;
            if namespaces || geo {
                options.network = chaos::Network::namespaces_for(base_port);
            }
            if geo {
                let names: Vec<String> = chaos::REGION_NAMES
                    .iter()
                    .take(regions)
                    .map(|n| (*n).to_owned())
                    .collect();
                options.geography = Some(chaos::geography::Geography::earth(&names)?);
            }
            let started = Instant::now();
            let deployment = Deployment::up(&cli.data_dir, &options).await?;
            println!("up in {:.1} s", started.elapsed().as_secs_f64());
            print_status(&deployment);
        }
        Action::Down => match Deployment::down(&cli.data_dir)? {
            Some(d) => println!(
                "stopped {} region(s); data kept in {}",
                d.regions.len(),
                d.data_dir.display()
            ),
            None => println!("nothing running in {}", cli.data_dir.display()),
        },
        Action::Status => match Deployment::load(&cli.data_dir)? {
            Some(deployment) => print_status(&deployment),
            None => println!("nothing running in {}", cli.data_dir.display()),
        },
        Action::Kill {
            region,
            process: Some(process),
            ..
        } => {
            let deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            let region = resolve(&deployment, &region).await?;
            deployment.kill_process(&region, &process)?;
            println!("killed the {process} of {region}");
        }
        Action::Kill {
            region,
            process: None,
            unpublished_tail_ms,
        } => {
            let deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            let region = resolve(&deployment, &region).await?;
            if unpublished_tail_ms > 0 {
                deployment.hold_replicator(&region)?;
                // Fault timing, not synchronisation: the tail is whatever the clients
                // write in this window.
                tokio::time::sleep(Duration::from_millis(unpublished_tail_ms)).await;
            }
            deployment.kill_region(&region)?;
            println!("killed every process of {region}");
        }
        Action::Pause {
            region,
            ms,
            process,
        } => {
            let deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            let region = resolve(&deployment, &region).await?;
            deployment.pause_process(&region, &process, Duration::from_millis(ms))?;
            println!("{region}'s {process} was paused for {ms} ms");
        }
        Action::Start { region, process } => {
            let mut deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            if deployment.bin_dir.as_os_str().is_empty() {
                deployment.bin_dir = bin_dir()?;
            }
            deployment.start_process(&region, &process).await?;
            println!("the {process} of {region} is running again");
        }
        Action::Restart { region } => {
            let mut deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            if deployment.bin_dir.as_os_str().is_empty() {
                deployment.bin_dir = bin_dir()?;
            }
            deployment.restart_region(&region).await?;
            println!("{region} is running again");
        }
        Action::Partition { region, to } => {
            let deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            match to {
                Some(to) => {
                    deployment.partition_one_way(&region, &to)?;
                    println!("{region} can no longer reach {to}; {to} still reaches {region}");
                }
                None => {
                    deployment.partition(&region)?;
                    println!("{region} is cut off from every other region");
                }
            }
        }
        Action::Flaky {
            region,
            probability,
        } => {
            let deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            deployment.reset_peer(&region, probability)?;
            println!(
                "{region}'s links reset {:.1}% of their packets",
                probability * 100.0
            );
        }
        Action::Slow { region, kbit } => {
            let deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            deployment.bandwidth(&region, kbit)?;
            println!("{region}'s links to the others carry {kbit} kbit/s each way");
        }
        Action::Delay {
            region,
            ms,
            jitter_ms,
            seed,
        } => {
            let mut deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            if deployment.bin_dir.as_os_str().is_empty() {
                deployment.bin_dir = bin_dir()?;
            }
            let region = resolve(&deployment, &region).await?;
            deployment
                .latency(
                    &region,
                    Duration::from_millis(ms),
                    Duration::from_millis(jitter_ms),
                    seed,
                )
                .await?;
            println!("{region}'s links to the others delay each packet {ms} ms ± {jitter_ms} ms each way");
        }
        Action::Drift { region, rate } => {
            let mut deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            if deployment.bin_dir.as_os_str().is_empty() {
                deployment.bin_dir = bin_dir()?;
            }
            deployment.set_node_clock_rate(&region, Some(rate)).await?;
            println!("{region}'s node runs its clocks at x{rate}");
        }
        Action::Heal => {
            let mut deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            deployment.heal()?;
            println!("every network fault healed");
        }
        Action::Cpu { seconds } => {
            let deployment = Deployment::load(&cli.data_dir)?.context("nothing running")?;
            println!("measuring the CPU of every process for {seconds} s");
            let usage = chaos::proc_stat::measure(&deployment, Duration::from_secs(seconds)).await;
            print!("{}", usage.table());
        }
        Action::Locations {
            seconds,
            rate,
            kill,
        } => {
            let mut deployment = Deployment::load(&cli.data_dir)?
                .context("nothing running; run `ledger-local up --geo`")?;
            if deployment.bin_dir.as_os_str().is_empty() {
                deployment.bin_dir = bin_dir()?;
            }
            let victim = match kill {
                Some(region) => resolve(&deployment, &region).await?,
                None => deployment
                    .regions
                    .last()
                    .context("no regions")?
                    .name
                    .clone(),
            };
            let run = chaos::locations::run(
                &deployment,
                seconds,
                rate,
                &victim,
                chaos::locations::Writes::SurvivorsAccounts,
            )
            .await?;
            chaos::locations::print_summary(&run);
        }
        Action::LocationClient {
            regions,
            reads,
            writes,
            seconds,
            rate,
            api_key,
        } => {
            let regions = regions
                .iter()
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(n, u)| (n.to_owned(), u.to_owned()))
                        .with_context(|| format!("{pair:?} is not name=url"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            chaos::locations::run_client(
                regions,
                api_key,
                reads,
                writes,
                Duration::from_secs(seconds),
                rate,
            )
            .await?;
        }
        Action::Forwarding {
            requests,
            gaps_ms,
            home,
            via,
            hold_replication,
        } => {
            let deployment = Deployment::load(&cli.data_dir)?
                .context("nothing running; run `ledger-local up`")?;
            let regions = (home.as_deref(), via.as_deref());
            forwarding::run(&deployment, requests, &gaps_ms, regions, hold_replication).await?;
        }
        Action::Traffic { seconds, rate } => {
            let deployment = Deployment::load(&cli.data_dir)?
                .context("nothing running; run `ledger-local up`")?;
            run_demo(&deployment, seconds, rate).await?;
        }
        Action::Demo {
            regions,
            base_port,
            seconds,
            rate,
            keep,
        } => {
            let mut options = UpOptions::new(regions, base_port, bin_dir()?);
            // The demo does what production does: every client call carries a key.
            options.api_keys = true;
            let started = Instant::now();
            let deployment = Deployment::up(&cli.data_dir, &options).await?;
            println!(
                "{} regions up in {:.1} s",
                regions,
                started.elapsed().as_secs_f64()
            );
            print_status(&deployment);
            let result = run_demo(&deployment, seconds, rate).await;
            if keep {
                println!("\nleft running; stop with `ledger-local down`");
            } else {
                Deployment::down(&cli.data_dir)?;
                println!(
                    "\nstopped every region (data kept in {})",
                    cli.data_dir.display()
                );
            }
            result?;
        }
    }
    Ok(())
}

async fn run_demo(deployment: &Deployment, seconds: u64, rate: u32) -> anyhow::Result<()> {
    let clients: Vec<Client> = deployment
        .regions
        .iter()
        .map(|r| Client::new(&r.name, &r.api_url, deployment.api_key.as_deref()))
        .collect::<anyhow::Result<_>>()?;
    let names: Vec<String> = deployment.regions.iter().map(|r| r.name.clone()).collect();
    println!("\nopening 4 accounts homed in each region (through another region's node)");
    let accounts = demo::open_accounts(&clients, &names, 4).await?;
    println!(
        "traffic: {} clients (one per region, each talking to its own region) x {rate}/s for {seconds} s",
        clients.len()
    );
    let samples = demo::run_traffic(&clients, &accounts, Duration::from_secs(seconds), rate).await;
    demo::print_summary(&samples);
    demo::print_replication(deployment).await;

    let victim = names.last().context("no regions")?.clone();
    println!("\nkilling {victim} (SIGKILL to its process group: node, PostgreSQL, broker, voter, replicator, proxy)");
    deployment.kill_region(&victim)?;
    println!("reads of every account from the surviving regions (consistency=local):");
    for client in clients.iter().filter(|c| c.region != victim) {
        let mut served = 0;
        let mut stale_max = 0_u64;
        for account in &accounts {
            let (sample, body) = client
                .get("read", &format!("/v1/accounts/{}", account.id))
                .await?;
            if sample.status == 200 {
                served += 1;
                stale_max = stale_max.max(body["freshness"]["lag_ms"].as_u64().unwrap_or(0));
            }
        }
        println!(
            "  {:<10} served {served}/{} reads locally (largest reported lag {stale_max} ms)",
            client.region,
            accounts.len()
        );
    }
    if let (Some(client), Some(account)) = (
        clients.iter().find(|c| c.region != victim),
        accounts.iter().find(|a| a.home == victim),
    ) {
        let (sample, body) = client
            .post(
                "deposit",
                &format!("/v1/accounts/{}/deposits", account.id),
                &serde_json::json!({"amount": "1.00"}),
                None,
                None,
            )
            .await?;
        println!(
            "a deposit to an account homed in {victim}, sent to {}: {} {}",
            client.region,
            sample.status,
            body["detail"].as_str().unwrap_or("")
        );
        println!("(its slots move to the survivors with the failover tool's `promote`)");
    }
    Ok(())
}

/// A region's name, or `leader`: the region whose voter leads now.
async fn resolve(deployment: &Deployment, region: &str) -> anyhow::Result<String> {
    if region == "leader" {
        return deployment.leader_region().await;
    }
    Ok(deployment.region(region)?.name.clone())
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()
        .context("locate ledger-local")?
        .parent()
        .context("binary directory")?
        .to_owned())
}

fn print_status(deployment: &Deployment) {
    println!(
        "{:<10} {:<24} {:<44} processes (pid, ✗ = gone)",
        "region", "api", "database"
    );
    for r in &deployment.regions {
        let processes: Vec<String> = chaos::deployment::PROCESSES
            .iter()
            .filter_map(|p| {
                let pid = r.pid(p)?;
                Some(if pid_alive(pid) {
                    format!("{p} {pid}")
                } else {
                    format!("{p} ✗")
                })
            })
            .collect();
        println!(
            "{:<10} {:<24} {:<44} {}",
            r.name,
            r.api_url,
            r.database_url,
            processes.join(", ")
        );
    }
    if let Some(geography) = &deployment.geography {
        let links: Vec<String> = geography
            .links
            .iter()
            .map(|l| format!("{}<->{} {} ms", l.a, l.b, l.rtt_ms))
            .collect();
        let voters: Vec<String> = geography
            .voter_timings()
            .voter_env()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "geography: round trips {} (±{} ms each way); {}, lease ttl {} ms",
            links.join(", "),
            geography.jitter_ms,
            voters.join(" "),
            deployment.lease_ttl_ms
        );
    }
    if let Some(monitoring) = &deployment.monitoring {
        let alive = if pid_alive(monitoring.pid) {
            ""
        } else {
            " (✗ gone)"
        };
        println!(
            "prometheus {}{alive}: alerts at {0}/alerts, rules at {0}/rules, targets at {0}/targets; \
             dashboard: import observability/grafana/ledger.json into Grafana with this Prometheus as its data source",
            monitoring.url
        );
    }
    match &deployment.api_key {
        Some(key) => println!(
            "API keys on: send `Authorization: Bearer {key}` (tenant local, read+write); \
             keys file {} (`failover --deployment {} keys new|list|revoke`)",
            deployment.api_keys_file().display(),
            deployment.data_dir.display()
        ),
        None => {
            println!("API keys off: the public API is open (`up --api-keys` puts it behind keys)")
        }
    }
    println!("logs: <region dir>/<process>.log; stop with `ledger-local down`");
}
