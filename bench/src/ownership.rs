//! Ownership service benchmark on three real voter processes (fsync on): commit
//! latency of ownership commands, sustained lease renewals per second, leader-loss
//! to new-leader time, and the size of the state for many slots and overrides.
//!
//!   cargo build --release --workspace --bins
//!   target/release/ownership-bench

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use harness::{wait_until, VoterCluster, VoterTiming, WorkDir};
use ledger_bench::percentile_ms;
use ledger_wire::ownership::{Command, RegionSpec};
use ledger_wire::AccountId;
use nix::sys::signal::Signal;
use ownership::state::{OwnershipState, Proposal};
use ownership_client::OwnershipClient;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

#[derive(Debug, Parser)]
#[command(about = "Ownership service figures on three real voters")]
struct Args {
    /// Slots in the cluster.
    #[arg(long, default_value_t = 4096)]
    slots: u32,
    /// Sequential commands for the latency figure.
    #[arg(long, default_value_t = 2000)]
    commands: usize,
    /// Concurrent clients for the throughput figures.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of lease renewals.
    #[arg(long, default_value_t = 10)]
    renew_seconds: u64,
    /// Leader kills for the election figure.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Overrides for the state-size figure.
    #[arg(long, default_value_t = 100_000)]
    overrides: usize,
    /// Election timeout bounds (ms) the voters run with.
    #[arg(long, default_value_t = 300)]
    election_min_ms: u64,
    #[arg(long, default_value_t = 600)]
    election_max_ms: u64,
}

fn region_specs() -> Vec<RegionSpec> {
    REGIONS
        .iter()
        .map(|name| RegionSpec {
            name: (*name).into(),
            weight: 1,
        })
        .collect()
}

fn account(n: usize, slots: u32) -> anyhow::Result<AccountId> {
    Ok(AccountId::new((n % slots as usize) as u16, n as u64)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = ledger_bench::sibling_bin_dir(&["ownership-server"])?.join("ownership-server");
    let dir = WorkDir::temp("bench-ownership").context("make bench dir")?;
    let timing = VoterTiming {
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
        ..VoterTiming::default()
    };
    let mut cluster = VoterCluster::start(&bin, dir.path(), 3, timing)
        .await
        .context("start voters")?;
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(20))
        .await?;
    let client = Arc::new(OwnershipClient::new(
        cluster.addrs(),
        "bench",
        harness::voters::TEST_SECRET,
    )?);
    let regions = region_specs();
    client
        .init_cluster(args.slots, 3_000, regions)
        .await
        .context("init cluster")?;
    println!(
        "ownership: 3 voters on loopback, fsync on, {} slots",
        args.slots
    );

    command_latency(&client, &args).await?;
    concurrent_commands(&client, &args).await?;
    lease_renewals(&client, &args).await?;
    leader_loss(&mut cluster, &client, &args).await?;
    state_size(&args)?;
    Ok(())
}

/// One client, one command at a time: the commit latency of a rehome as a client sees it.
async fn command_latency(client: &OwnershipClient, args: &Args) -> anyhow::Result<()> {
    let mut samples = Vec::with_capacity(args.commands);
    for n in 0..args.commands {
        let started = Instant::now();
        client
            .rehome_account(account(n, args.slots)?, REGIONS[n % 3], None, "bench")
            .await?;
        samples.push(started.elapsed().as_micros() as u64);
    }
    println!(
        "commit latency (rehome, 1 client, {} commands): p50 {:.2} ms, p99 {:.2} ms",
        args.commands,
        percentile_ms(&samples, 50.0),
        percentile_ms(&samples, 99.0)
    );
    Ok(())
}

/// Runs `task(client_index, iteration)` on `clients` clients for `seconds`, and
/// returns (completed, errors, latency samples).
async fn load<F, Fut>(clients: usize, seconds: u64, task: F) -> (usize, usize, Vec<u64>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let task = Arc::new(task);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for c in 0..clients {
        let task = task.clone();
        handles.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut samples) = (0, 0, Vec::new());
            let mut i = 0;
            while Instant::now() < until {
                let started = Instant::now();
                if task(c, i).await {
                    ok += 1;
                    samples.push(started.elapsed().as_micros() as u64);
                } else {
                    failed += 1;
                }
                i += 1;
            }
            (ok, failed, samples)
        }));
    }
    let (mut ok, mut failed, mut samples) = (0, 0, Vec::new());
    for handle in handles {
        if let Ok((o, f, s)) = handle.await {
            ok += o;
            failed += f;
            samples.extend(s);
        }
    }
    (ok, failed, samples)
}

async fn concurrent_commands(client: &Arc<OwnershipClient>, args: &Args) -> anyhow::Result<()> {
    let slots = args.slots;
    let client = client.clone();
    let seconds = 5;
    let (ok, failed, samples) = load(args.clients, seconds, move |c, i| {
        let client = client.clone();
        async move {
            let Ok(account) = account(c * 1_000_000 + i, slots) else {
                return false;
            };
            client
                .rehome_account(account, REGIONS[i % 3], None, "bench")
                .await
                .is_ok()
        }
    })
    .await;
    println!(
        "commands (rehome, {} clients, {seconds} s): {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {failed} errors",
        args.clients,
        ok as f64 / seconds as f64,
        percentile_ms(&samples, 50.0),
        percentile_ms(&samples, 99.0)
    );
    Ok(())
}

/// Every renewal goes through Raft and answers with the region's slots (a third of
/// them here), like the renewals region nodes send every ttl/3.
async fn lease_renewals(client: &Arc<OwnershipClient>, args: &Args) -> anyhow::Result<()> {
    let client = client.clone();
    let (ok, failed, samples) = load(args.clients, args.renew_seconds, move |c, _| {
        let client = client.clone();
        async move { client.renew_lease(REGIONS[c % 3]).await.is_ok() }
    })
    .await;
    let rate = ok as f64 / args.renew_seconds as f64;
    println!(
        "lease renewals ({} clients, {} s, ~{} slots per answer): {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {failed} errors",
        args.clients,
        args.renew_seconds,
        args.slots / 3,
        percentile_ms(&samples, 50.0),
        percentile_ms(&samples, 99.0)
    );
    Ok(())
}

/// SIGKILLs the leader and times until the two survivors agree on a new one; the
/// killed voter is restarted before the next round.
async fn leader_loss(
    cluster: &mut VoterCluster,
    client: &OwnershipClient,
    args: &Args,
) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for _ in 0..args.kills {
        let leader = cluster
            .wait_leader(&[0, 1, 2], Duration::from_secs(20))
            .await?;
        let index = cluster.index_of(leader).context("leader index")?;
        let survivors: Vec<usize> = (0..3).filter(|&i| i != index).collect();
        let killed_at = Instant::now();
        cluster.signal(index, Signal::SIGKILL)?;
        cluster
            .wait_leader(&survivors, Duration::from_secs(20))
            .await?;
        samples.push(killed_at.elapsed().as_micros() as u64);
        cluster.restart(index).await?;
        // Let the restarted voter rejoin before the next kill.
        let addr = cluster.voters[index].addr();
        wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            let addr = addr.clone();
            async move { client.cluster_status(&addr).await.ok()?.current_leader }
        })
        .await
        .context("restarted voter did not rejoin")?;
    }
    let listed: Vec<String> = samples
        .iter()
        .map(|us| format!("{:.0}", *us as f64 / 1000.0))
        .collect();
    println!(
        "leader loss to new leader (election timeout {}-{} ms, {} kills): median {:.0} ms, max {:.0} ms ({} ms)",
        args.election_min_ms,
        args.election_max_ms,
        samples.len(),
        percentile_ms(&samples, 50.0),
        percentile_ms(&samples, 100.0),
        listed.join(", ")
    );
    Ok(())
}

/// Builds the state in-process through the same state machine code, and measures
/// what a snapshot of it weighs and costs.
fn state_size(args: &Args) -> anyhow::Result<()> {
    let mut state = OwnershipState::default();
    let propose = |state: &mut OwnershipState, command| {
        state.apply(Proposal {
            at_ms: 0,
            actor: "bench".into(),
            reason: String::new(),
            command,
        })
    };
    let regions = region_specs();
    propose(
        &mut state,
        Command::InitCluster {
            slot_count: args.slots,
            lease_ttl_ms: 3_000,
            regions,
        },
    );
    for n in 0..args.overrides {
        let command = Command::RehomeAccount {
            account: account(n, args.slots)?,
            to: REGIONS[n % 3].into(),
            expected_epoch: None,
        };
        propose(&mut state, command);
    }
    let started = Instant::now();
    let snapshot = serde_json::to_vec(&state)?;
    let encode = started.elapsed();
    let started = Instant::now();
    let _: OwnershipState = serde_json::from_slice(&snapshot)?;
    let decode = started.elapsed();
    let map = serde_json::to_vec(&state.map())?;
    println!(
        "state for {} slots + {} overrides: snapshot {:.1} MiB (map alone {:.1} MiB, the rest is {} history records); encode {:?}, decode {:?}",
        args.slots,
        args.overrides,
        snapshot.len() as f64 / 1_048_576.0,
        map.len() as f64 / 1_048_576.0,
        state.history_len(),
        encode,
        decode
    );
    Ok(())
}
