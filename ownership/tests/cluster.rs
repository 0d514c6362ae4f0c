//! Three real `ownership-server` processes on loopback: leader loss under writes,
//! a cut-off voter, leases and promote, and a restart of the whole cluster from disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::voters::TEST_SECRET;
use harness::{wait_until, VoterCluster, VoterTiming, WorkDir};
use ledger_wire::ownership::{ChangeRecord, Outcome, OwnershipMap, RegionSpec, RejectCode, Target};
use ledger_wire::AccountId;
use nix::sys::signal::Signal;
use ownership_client::{ClientError, OwnershipClient};
use tokio::sync::Mutex;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SLOTS: u32 = 64;
const TTL_MS: u64 = 1_000;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ownership-server"))
}

fn regions() -> Vec<RegionSpec> {
    ["eu-west", "us-east", "ap-south"]
        .into_iter()
        .map(|name| RegionSpec {
            name: name.into(),
            weight: 1,
        })
        .collect()
}

async fn start(
    dir: &WorkDir,
    timing: VoterTiming,
) -> Result<(VoterCluster, OwnershipClient), Box<dyn std::error::Error>> {
    let cluster = VoterCluster::start(bin(), dir.path(), 3, timing).await?;
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(20))
        .await?;
    let client = OwnershipClient::new(cluster.addrs(), "test", TEST_SECRET)?;
    client.init_cluster(SLOTS, TTL_MS, regions()).await?;
    Ok((cluster, client))
}

/// The map as one voter sees it, without a quorum check.
async fn local_map(addr: &str) -> Option<OwnershipMap> {
    OwnershipClient::new(vec![addr.to_owned()], "test", TEST_SECRET)
        .ok()?
        .local_map(addr)
        .await
        .ok()
}

fn account(n: u64) -> AccountId {
    AccountId::new((n % u64::from(SLOTS)) as u16, n).expect("slot in range")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_writes_loses_no_committed_entry() -> TestResult {
    let dir = WorkDir::temp("ownership-leader-kill")?;
    let (mut cluster, client) = start(&dir, VoterTiming::default()).await?;
    let client = Arc::new(client);
    let acknowledged: Arc<Mutex<Vec<ChangeRecord>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop_writers, stop) = tokio::sync::watch::channel(false);

    let mut writers = Vec::new();
    for writer in 0..4u64 {
        let (client, acknowledged, failures, stop) = (
            client.clone(),
            acknowledged.clone(),
            failures.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut n = writer;
            while !*stop.borrow() {
                n += 4;
                let to = ["eu-west", "us-east", "ap-south"][(n % 3) as usize];
                match client
                    .rehome_account(account(n), to, None, "leader-kill test")
                    .await
                {
                    Ok(Outcome::Applied {
                        change: Some(change),
                        ..
                    }) => acknowledged.lock().await.push(*change),
                    Ok(other) => failures.lock().await.push(format!("unexpected {other:?}")),
                    Err(e) => failures.lock().await.push(e.to_string()),
                }
            }
        }));
    }
    let enough = |count: usize| {
        let acknowledged = acknowledged.clone();
        async move { (acknowledged.lock().await.len() >= count).then_some(()) }
    };
    wait_until(Duration::from_secs(20), Duration::from_millis(10), || {
        enough(50)
    })
    .await
    .ok_or("writers made no progress before the kill")?;

    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await?;
    let killed = cluster
        .index_of(leader)
        .ok_or("leader is not a known voter")?;
    let before_kill = acknowledged.lock().await.len();
    let killed_at = Instant::now();
    cluster.signal(killed, Signal::SIGKILL)?;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != killed).collect();
    let new_leader = cluster
        .wait_leader(&survivors, Duration::from_secs(20))
        .await?;
    let election = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("leader {leader} killed; {new_leader} leads after {election:?}");

    wait_until(Duration::from_secs(20), Duration::from_millis(10), || {
        enough(before_kill + 50)
    })
    .await
    .ok_or("writers made no progress after the election")?;
    cluster.restart(killed).await?;
    wait_until(Duration::from_secs(20), Duration::from_millis(10), || {
        enough(before_kill + 100)
    })
    .await
    .ok_or("writers made no progress after the restart")?;
    stop_writers.send(true)?;
    for writer in writers {
        writer.await?;
    }

    // Every acknowledged change is in the history, exactly as it was acknowledged.
    let history: BTreeMap<u64, ChangeRecord> = client
        .history(0, 10_000)
        .await?
        .into_iter()
        .map(|c| (c.version, c))
        .collect();
    let acknowledged = acknowledged.lock().await;
    for change in acknowledged.iter() {
        assert_eq!(
            history.get(&change.version),
            Some(change),
            "acknowledged change lost"
        );
    }
    // Failures during the election are errors the client saw, never wrong answers.
    for failure in failures.lock().await.iter() {
        assert!(!failure.starts_with("unexpected"), "{failure}");
        eprintln!("client error: {failure}");
    }

    // The restarted voter catches up to the same map.
    let expected = client.map().await?;
    let restarted = cluster.voters[killed].addr();
    let caught_up = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        let restarted = restarted.clone();
        let expected = expected.clone();
        async move { (local_map(&restarted).await? == expected).then_some(()) }
    })
    .await;
    assert!(caught_up.is_some(), "restarted voter did not catch up");
    eprintln!(
        "{} changes acknowledged, {} client errors during the election",
        acknowledged.len(),
        failures.lock().await.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voter_cut_off_from_the_majority_cannot_commit() -> TestResult {
    let dir = WorkDir::temp("ownership-minority")?;
    let timing = VoterTiming {
        commit_timeout_ms: 1_000,
        ..VoterTiming::default()
    };
    let (mut cluster, _) = start(&dir, timing).await?;
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await?;
    let alone = cluster
        .index_of(leader)
        .ok_or("leader is not a known voter")?;
    let others: Vec<usize> = (0..3).filter(|&i| i != alone).collect();
    // The leader's only client talks to it alone; its peers are frozen.
    let lonely = OwnershipClient::new(vec![cluster.voters[alone].addr()], "test", TEST_SECRET)?
        .with_retry_for(Duration::ZERO);
    for &i in &others {
        cluster.signal(i, Signal::SIGSTOP)?;
    }

    let started = Instant::now();
    let write = lonely
        .rehome_account(account(1), "us-east", None, "minority test")
        .await;
    assert!(
        matches!(&write, Err(ClientError::OutcomeUnknown(m)) if m.contains("cut off from the majority")),
        "a minority leader must not report a commit: {write:?}"
    );
    let read = lonely.map().await;
    assert!(
        matches!(&read, Err(ClientError::Unavailable(m)) if m.contains("majority") || m.contains("quorum")),
        "a minority leader must not serve a linearizable read: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "errors took {:?}",
        started.elapsed()
    );

    // A follower cut off with its leader gone refuses too.
    for &i in &others {
        cluster.signal(i, Signal::SIGCONT)?;
    }
    let all = OwnershipClient::new(cluster.addrs(), "test", TEST_SECRET)?;
    let before = all.map().await?;
    cluster.signal(alone, Signal::SIGSTOP)?;
    cluster.signal(others[0], Signal::SIGSTOP)?;
    let follower =
        OwnershipClient::new(vec![cluster.voters[others[1]].addr()], "test", TEST_SECRET)?
            .with_retry_for(Duration::ZERO);
    let write = follower
        .rehome_account(account(2), "us-east", None, "minority test")
        .await;
    assert!(
        write.is_err(),
        "a lone follower reported a commit: {write:?}"
    );
    cluster.signal(alone, Signal::SIGCONT)?;
    cluster.signal(others[0], Signal::SIGCONT)?;

    // Once healed, the cluster commits again, and nothing was applied twice.
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(20))
        .await?;
    // The first commit after the heal can outlast this cluster's 1 s commit timeout on
    // a loaded machine (a new leader commits its own entry first): an unknown outcome
    // is read back, as the error says to, and the command is sent again only if it
    // did not apply. (CI once failed here with "not committed within 1000 ms".)
    let healed = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            match all
                .rehome_account(account(3), "ap-south", None, "after heal")
                .await
            {
                Ok(outcome) => Some(Ok(Some(outcome))),
                Err(ClientError::OutcomeUnknown(why)) => {
                    let applied = all
                        .map()
                        .await
                        .is_ok_and(|map| map.overrides.contains_key(&account(3)));
                    if !applied {
                        eprintln!("after heal, not committed yet ({why}); retrying");
                    }
                    applied.then_some(Ok(None))
                }
                Err(error) => Some(Err(error)),
            }
        },
    )
    .await
    .ok_or("the rehome after the heal did not commit within 20 s")??;
    if let Some(outcome) = healed {
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    }
    let after = all.map().await?;
    assert!(after.version > before.version);
    let history = all.history(0, 10_000).await?;
    let versions: Vec<u64> = history.iter().map(|c| c.version).collect();
    let expected: Vec<u64> = (1..=after.version).collect();
    assert_eq!(versions, expected, "history has gaps or repeats");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_gate_promote_and_renewals_report_lost_slots() -> TestResult {
    let dir = WorkDir::temp("ownership-leases")?;
    let (_cluster, client) = start(&dir, VoterTiming::default()).await?;
    let before = client.map().await?;
    let eu_slots = before
        .slot_counts()
        .get("eu-west")
        .copied()
        .unwrap_or_default();
    assert!(eu_slots > 0);

    // Renewals every ttl/3 keep eu-west live: promote is refused throughout.
    let mut last_grant = client.renew_lease("eu-west").await?;
    assert_eq!(last_grant.slot_numbers().count(), eu_slots);
    // The cadence a region renews at; it paces renewals, it does not wait for anything.
    let mut renewal_ticks = tokio::time::interval(Duration::from_millis(TTL_MS / 3));
    renewal_ticks.tick().await;
    let until = Instant::now() + Duration::from_millis(3 * TTL_MS);
    while Instant::now() < until {
        renewal_ticks.tick().await;
        last_grant = client.renew_lease("eu-west").await?;
        let refused = client.promote("eu-west", false, "lease test").await;
        assert!(
            matches!(
                refused,
                Err(ClientError::Rejected {
                    code: RejectCode::LeaseLive,
                    ..
                })
            ),
            "promote during a live lease: {refused:?}"
        );
    }

    // Renewals stop; once the ttl has passed, promote is allowed.
    let promoted = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let client = &client;
        async move {
            match client.promote("eu-west", false, "lease test").await {
                Ok(Outcome::Applied {
                    change: Some(change),
                    ..
                }) => Some(change),
                _ => None,
            }
        }
    })
    .await
    .ok_or("promote never allowed after renewals stopped")?;
    assert!(
        promoted.at_ms >= last_grant.granted_at_ms + TTL_MS as i64,
        "promote at {} before the lease ran out at {}",
        promoted.at_ms,
        last_grant.granted_at_ms + TTL_MS as i64
    );
    let moved: u32 = promoted
        .moves
        .iter()
        .map(|m| match m.target {
            Target::Slots { first, last } => last - first + 1,
            Target::Account(_) => 0,
        })
        .sum();
    assert_eq!(moved as usize, eu_slots);

    // The deposed region's renewal lists none of its old slots; the survivors have them.
    let deposed = client.renew_lease("eu-west").await?;
    assert!(
        deposed.slots.is_empty(),
        "deposed region still granted {:?}",
        deposed.slots
    );
    let us = client.renew_lease("us-east").await?.slot_numbers().count();
    let ap = client.renew_lease("ap-south").await?.slot_numbers().count();
    assert_eq!(us + ap, SLOTS as usize);
    assert!(
        us.abs_diff(ap) <= 1,
        "slots not spread by weight: {us} vs {ap}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_map_and_history() -> TestResult {
    let dir = WorkDir::temp("ownership-restart")?;
    // Snapshot every 20 entries so the restart goes through snapshot + compacted log.
    let timing = VoterTiming {
        snapshot_every: 20,
        ..VoterTiming::default()
    };
    let (mut cluster, client) = start(&dir, timing).await?;
    for n in 0..60u64 {
        let to = ["eu-west", "us-east", "ap-south"][(n % 3) as usize];
        client
            .rehome_account(account(n), to, None, "restart test")
            .await?;
    }
    client
        .freeze_slots(vec![1, 2, 3], true, "restart test")
        .await?;
    let map = client.map().await?;
    let history = client.history(0, 10_000).await?;
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await?;
    let status = client
        .cluster_status(&cluster.voters[cluster.index_of(leader).unwrap_or(0)].addr())
        .await?;
    assert!(
        status.snapshot_index.is_some(),
        "no snapshot was taken: {status:?}"
    );

    // SIGKILL everyone: nothing gets a chance to flush on the way out.
    for i in 0..3 {
        cluster.signal(i, Signal::SIGKILL)?;
    }
    for i in 0..3 {
        cluster.restart(i).await?;
    }
    cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(20))
        .await?;
    assert_eq!(client.map().await?, map);
    assert_eq!(client.history(0, 10_000).await?, history);
    for i in 0..3 {
        let status = client.cluster_status(&cluster.voters[i].addr()).await?;
        assert!(
            status.purged_index.is_some() || status.snapshot_index.is_some(),
            "voter {i}: {status:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_can_be_removed_and_added_back() -> TestResult {
    let dir = WorkDir::temp("ownership-membership")?;
    let (mut cluster, client) = start(&dir, VoterTiming::default()).await?;
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(5))
        .await?;
    let leaving = cluster
        .voters
        .iter()
        .find(|v| v.id != leader)
        .ok_or("no follower")?;
    let (leaving_id, leaving_addr) = (leaving.id, leaving.addr());
    // Ask a voter other than the leader: the change is forwarded.
    let asked = cluster
        .voters
        .iter()
        .find(|v| v.id != leader && v.id != leaving_id)
        .ok_or("no voter")?;

    let asked_client = OwnershipClient::new(vec![asked.addr()], "test", TEST_SECRET)?;
    let voters = asked_client.remove_voter(leaving_id).await?;
    assert_eq!(voters.len(), 2);
    assert!(!voters.contains_key(&leaving_id));
    client
        .rehome_account(account(5), "us-east", None, "two voters")
        .await?;

    let added = asked_client.add_voter(leaving_id, &leaving_addr).await?;
    assert_eq!(added.len(), 3);
    client
        .rehome_account(account(6), "ap-south", None, "three voters again")
        .await?;
    let expected = client.map().await?;
    let caught_up = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        let (addr, expected) = (leaving_addr.clone(), expected.clone());
        async move { (local_map(&addr).await? == expected).then_some(()) }
    })
    .await;
    assert!(caught_up.is_some(), "re-added voter did not catch up");

    // SIGTERM drains and exits cleanly.
    for i in 0..3 {
        assert_eq!(
            cluster.stop(i).as_deref(),
            Some("exit status: 0"),
            "voter {i}"
        );
    }
    Ok(())
}
