//! Network partitions of real regions, each in its own network namespace: a partition
//! cuts every link of a region (API, node-to-voter, Raft between voters, Kafka fetches
//! of the other regions' appliers), a one-way partition only one direction; after the
//! heal every region converges and no money is made or lost.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use common::{eventually, Regions};
use rust_decimal::Decimal;
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(60);
/// How long a region that reaches the Raft leader may take to hold its lease again.
const LEASE_BOUND: Duration = Duration::from_secs(10);
/// How long a probe waits for a TCP handshake: a dropped SYN never answers.
const PROBE_SECONDS: &str = "2";

/// Whether a TCP connection from inside region `from`'s namespace to `addr` opens.
fn reachable(regions: &Regions, from: usize, addr: &str) -> anyhow::Result<bool> {
    let namespace = regions
        .deployment
        .network
        .namespace(from)
        .context("regions run in namespaces")?;
    let (host, port) = addr.rsplit_once(':').context("host:port")?;
    let status = Command::new("ip")
        .args(["netns", "exec", &namespace, "timeout", PROBE_SECONDS])
        .args(["bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{port}")])
        .status()
        .context("run a connection probe")?;
    Ok(status.success())
}

/// The addresses of region `to` other regions connect to: broker (Kafka), voter (Raft
/// and leases), node API.
fn links_into(regions: &Regions, to: usize) -> Vec<(&'static str, String)> {
    let region = &regions.deployment.regions[to];
    let api = region.api_url.trim_start_matches("http://").to_owned();
    vec![
        ("kafka", region.broker.clone()),
        ("raft", region.voter.clone()),
        ("api", api),
    ]
}

async fn deposit(regions: &Regions, via: usize, id: &str, amount: &str) -> anyhow::Result<u16> {
    deposit_keyed(regions, via, id, amount, None).await
}

/// A deposit under `key` (retries of one key apply once).
async fn deposit_keyed(
    regions: &Regions,
    via: usize,
    id: &str,
    amount: &str,
    key: Option<&str>,
) -> anyhow::Result<u16> {
    let (sample, _) = regions
        .client(via)
        .post(
            "deposit",
            &format!("/v1/accounts/{id}/deposits"),
            &json!({"amount": amount}),
            key,
            None,
        )
        .await?;
    Ok(sample.status)
}

/// The account's (balance, seq) in region `i`, if it has the account.
async fn state_in(regions: &Regions, i: usize, id: &str) -> Option<(Decimal, i64)> {
    regions.accounts(i).await.ok()?.get(id).copied()
}

async fn leader(regions: &Regions, asked: usize) -> Option<u64> {
    let voter = &regions.deployment.regions[asked].voter;
    let status = regions.ownership().cluster_status(voter).await.ok()?;
    status.current_leader
}

fn total(states: &std::collections::BTreeMap<String, (Decimal, i64)>) -> Decimal {
    states.values().map(|(balance, _)| *balance).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_region_loses_every_link_and_catches_up_after_the_heal() -> anyhow::Result<()>
{
    let mut regions = Regions::start_in_namespaces("partition").await?;
    let mut accounts = Vec::new();
    for home in 0..3 {
        accounts.push(regions.open(home, home, "100").await?);
    }
    regions
        .wait_converged(&[0, 1, 2], CONVERGE)
        .await
        .context("converge before the partition")?;
    // Cut the region whose voter leads, so the partition also forces a Raft election.
    let leader_id = eventually("a Raft leader", CONVERGE, || leader(&regions, 0)).await?;
    let cut = usize::try_from(leader_id - 1).context("voter ids are region index + 1")?;
    let (a, b) = ((cut + 1) % 3, (cut + 2) % 3);
    regions.deployment.partition(&regions.name(cut))?;

    for (link, addr) in links_into(&regions, cut) {
        assert!(
            !reachable(&regions, a, &addr)?,
            "{link} of the cut region reachable from {}",
            regions.name(a)
        );
    }
    for (link, addr) in links_into(&regions, a) {
        assert!(
            !reachable(&regions, cut, &addr)?,
            "{link} of {} reachable from the cut region",
            regions.name(a)
        );
        assert!(
            reachable(&regions, b, &addr)?,
            "{link} between the two healthy regions cut"
        );
    }
    eventually("the healthy side elects a leader", CONVERGE, || async {
        let seen_by_a = leader(&regions, a).await.filter(|l| *l != leader_id)?;
        (leader(&regions, b).await == Some(seen_by_a)).then_some(())
    })
    .await?;
    // The cut region's lease runs out: its node refuses writes to its own account
    // (503: nothing written). Deposits it still took before that count.
    let committed_while_cut = AtomicU32::new(0);
    eventually("the cut region stops writing", CONVERGE, || async {
        match deposit(&regions, cut, &accounts[cut], "1").await {
            Ok(201) => {
                committed_while_cut.fetch_add(1, Ordering::Relaxed);
                None
            }
            Ok(503) => Some(Ok(())),
            Ok(other) => Some(Err(anyhow::anyhow!("deposit while cut answered {other}"))),
            Err(error) => Some(Err(error)),
        }
    })
    .await??;
    // The healthy side goes on, and its writes reach the other healthy region only.
    assert_eq!(deposit(&regions, a, &accounts[a], "10").await?, 201);
    let expected = state_in(&regions, a, &accounts[a]).await;
    eventually("the healthy side replicates", CONVERGE, || async {
        (state_in(&regions, b, &accounts[a]).await == expected).then_some(())
    })
    .await?;
    assert_ne!(
        state_in(&regions, cut, &accounts[a]).await,
        expected,
        "a write of the healthy side reached the cut region (its Kafka link is cut)"
    );

    regions.deployment.heal()?;
    eventually("the healed region writes again", CONVERGE, || async {
        let status = deposit(&regions, cut, &accounts[cut], "5").await.ok()?;
        (status == 201).then_some(())
    })
    .await?;
    let states = regions.wait_converged(&[0, 1, 2], CONVERGE).await?;
    let ones = committed_while_cut.load(Ordering::Relaxed);
    assert_eq!(
        total(&states),
        Decimal::from(300 + 10 + 5 + ones),
        "money conserved to the cent ({ones} deposits taken while cut): {states:?}"
    );
    // The healed voter may force one more election (its term rose while alone); the
    // three voters end up agreeing on one leader.
    eventually("all voters follow one leader", CONVERGE, || async {
        let first = leader(&regions, 0).await?;
        for i in 1..3 {
            (leader(&regions, i).await? == first).then_some(())?;
        }
        Some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_way_partition_cuts_only_one_direction() -> anyhow::Result<()> {
    let mut regions = Regions::start_in_namespaces("one-way").await?;
    let mut accounts = Vec::new();
    for home in 0..3 {
        accounts.push(regions.open(home, home, "100").await?);
    }
    regions.wait_converged(&[0, 1, 2], CONVERGE).await?;
    // Cut between the two regions that do not hold the Raft leader: both still renew
    // their leases there. (A region that cannot reach the leader's voter loses its
    // lease, whichever way the cut goes: that is the lease doing its job.) An election
    // during the cut (a heartbeat late on a loaded machine) can move leadership into
    // `to`, which `from` then cannot reach: its lease lapses as it should and the
    // premise is gone, so the cut is made again around the new leader (at most twice).
    let mut attempt = 0;
    let (held, from, to) = loop {
        attempt += 1;
        let leader_id = eventually("a Raft leader", CONVERGE, || leader(&regions, 0)).await?;
        let held = usize::try_from(leader_id - 1).context("voter ids are region index + 1")?;
        let (from, to) = ((held + 1) % 3, (held + 2) % 3);
        // `from` can no longer reach `to`; `to` still reaches `from`.
        regions
            .deployment
            .partition_one_way(&regions.name(from), &regions.name(to))?;
        for (link, addr) in links_into(&regions, to) {
            assert!(
                !reachable(&regions, from, &addr)?,
                "{link} still open in the cut direction"
            );
            assert!(
                reachable(&regions, held, &addr)?,
                "{link} cut from the third region"
            );
        }
        for (link, addr) in links_into(&regions, from) {
            assert!(
                reachable(&regions, to, &addr)?,
                "{link} cut in the open direction"
            );
        }
        // `to`'s applier still fetches `from`'s events (`to` opens those connections)...
        // One key for every try of this cut: a try whose answer was lost is not
        // applied twice.
        let key = format!("one-way-7-{attempt}");
        let accepted = eventually("a write at home in `from`", LEASE_BOUND, || async {
            let status = deposit_keyed(&regions, from, &accounts[from], "7", Some(&key));
            (status.await.ok()? == 201).then_some(())
        })
        .await;
        let moved = leader(&regions, held).await != Some(leader_id);
        match accepted {
            Ok(()) => break (held, from, to),
            Err(_) if moved && attempt < 3 => {
                println!("the Raft leader moved during the cut (attempt {attempt}); cutting again");
                regions.deployment.heal()?;
            }
            Err(error) => return Err(error),
        }
    };
    let written = state_in(&regions, from, &accounts[from]).await;
    eventually(
        "the write crosses in the open direction",
        CONVERGE,
        || async { (state_in(&regions, to, &accounts[from]).await == written).then_some(()) },
    )
    .await?;
    // ...while `from`'s applier cannot fetch `to`'s.
    assert_eq!(deposit(&regions, to, &accounts[to], "3").await?, 201);
    let written = state_in(&regions, to, &accounts[to]).await;
    eventually("the write reaches the third region", CONVERGE, || async {
        (state_in(&regions, held, &accounts[to]).await == written).then_some(())
    })
    .await?;
    assert_ne!(
        state_in(&regions, from, &accounts[to]).await,
        written,
        "a write crossed in the cut direction"
    );

    regions.deployment.heal()?;
    let states = regions.wait_converged(&[0, 1, 2], CONVERGE).await?;
    assert_eq!(
        total(&states),
        Decimal::from(300 + 7 + 3),
        "money conserved to the cent: {states:?}"
    );
    Ok(())
}

/// The bank workload (transfers only, accounts of 100.00, retries with the same key at
/// another region) through partition + promote + heal + failback of a home that stays
/// alive all along: the split-brain case, on the region whose voter leads Raft. While cut off the home keeps its lease for
/// up to a ttl and its relay keeps publishing to its own broker, which nobody else can
/// read; the survivors take its slots over; after the heal its tail arrives as late
/// events. Checked by the drill's audit and, independently, to the cent here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_workload_survives_partition_promote_heal_and_failback() -> anyhow::Result<()> {
    let regions = Regions::start_in_namespaces("bank-partition").await?;
    // The region whose voter leads Raft: its partition also cuts the leader off, so the
    // promote runs while the survivors elect a new one and a follower may still point
    // at the old leader (a combination that once failed the promote outright).
    let target = regions.deployment.leader_region().await?;
    let report_dir = regions.deployment.data_dir.join("report");
    let data_dir = regions.deployment.data_dir.display().to_string();
    let ledger_local = common::bin_dir().join("ledger-local");
    let ledger_local = ledger_local.display();
    let output = Command::new(common::bin_dir().join("failover"))
        .args([
            "--deployment",
            &data_dir,
            "drill",
            "--scenario",
            "kill-cycles",
        ])
        .args(["--region", &target, "--cycles", "1"])
        .args(["--workload", "transfers", "--rate", "40"])
        .args(["--accounts-per-region", "4", "--funding", "100.00"])
        .args(["--warmup-s", "2", "--observe-s", "2", "--down-for-s", "2"])
        .args(["--heal-timeout-s", "120"])
        .arg("--report-dir")
        .arg(&report_dir)
        .arg("--kill-cmd")
        .arg(format!(
            "{ledger_local} --data-dir {data_dir} partition {{region}}"
        ))
        .arg("--restart-cmd")
        .arg(format!("{ledger_local} --data-dir {data_dir} heal"))
        .arg("--pause-cmd")
        .arg(format!(
            "{ledger_local} --data-dir {data_dir} pause {{region}} --ms 3000"
        ))
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the partition drill passes");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json"))?)?;
    let checks = report["invariants"]["checks"]
        .as_array()
        .context("checks")?;
    assert!(
        checks.iter().all(|c| c["ok"] == true),
        "every invariant holds: {checks:?}"
    );
    let cycle = &report["cycles"][0];
    assert!(
        cycle["failback_ms"].is_u64(),
        "the failback succeeded: {cycle}"
    );
    let acknowledged = report["transfers"]["acknowledged"].as_u64().unwrap_or(0);
    assert!(acknowledged >= 50, "{acknowledged} transfers acknowledged");
    for i in 0..3 {
        let db = regions.db(i).await?;
        let row = db
            .query_one(
                "SELECT sum(balance),
                        (SELECT count(*) FROM ledger.transfers
                          WHERE state NOT IN ('completed', 'refunded', 'rejected'))
                 FROM ledger.accounts",
                &[],
            )
            .await?;
        assert_eq!(
            row.get::<_, Decimal>(0),
            Decimal::new(120_000, 2),
            "{}: 12 accounts x 100.00, to the cent",
            regions.name(i)
        );
        assert_eq!(
            row.get::<_, i64>(1),
            0,
            "{}: no transfer in flight",
            regions.name(i)
        );
    }
    Ok(())
}
