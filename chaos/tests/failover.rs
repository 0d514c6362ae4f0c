//! Failover against three real regions: switchover under writes (RPO 0, per-slot
//! unavailability), rehome of one account, SIGKILL + promote + return with
//! reconciliation (ack=local) and failback, the same kill with ack=replicated, and a
//! drill whose injected fault breaks an invariant and exits non-zero.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{eventually, Regions};
use failover::audit::{self, AckedWrite};
use failover::drill::acknowledged;
use failover::drill::workload::{self, Attempt, Workload, WorkloadOptions};
use failover::promote::PromoteOptions;
use failover::switchover::SwitchoverOptions;
use failover::{Cluster, FailoverError, Targets};
use ledger_wire::ownership::RegionStatus;
use ledger_wire::AccountId;

const WAIT: Duration = Duration::from_secs(60);

fn targets(regions: &Regions) -> Targets {
    Targets::from_local(&regions.deployment.data_dir).expect("deployment state")
}

fn nodes(regions: &Regions) -> BTreeMap<String, String> {
    targets(regions).nodes
}

async fn start_load(
    regions: &Regions,
    per_region: usize,
    replicated: bool,
) -> anyhow::Result<Workload> {
    start_load_homed(regions, per_region, replicated, &[]).await
}

/// As [`start_load`], opening accounts only in regions not in `skip` (a deposed region
/// owns no slot to open accounts in).
async fn start_load_homed(
    regions: &Regions,
    per_region: usize,
    replicated: bool,
    skip: &[String],
) -> anyhow::Result<Workload> {
    let mut homes = nodes(regions);
    homes.retain(|name, _| !skip.contains(name));
    let accounts = workload::open_accounts(
        &homes,
        targets(regions).api_key.as_deref(),
        per_region,
        workload::DEFAULT_FUNDING,
    )
    .await?;
    let options = WorkloadOptions {
        rate_per_sec: 80,
        accounts_per_region: per_region,
        ack_replicated: replicated,
        concurrency: 32,
        mix: workload::Mix::Payments,
    };
    workload::start(
        nodes(regions),
        accounts,
        options,
        targets(regions).api_key.as_deref(),
    )
}

/// Waits until the workload has `more` acknowledged writes than now (for `filter`).
async fn await_acks(
    load: &Workload,
    more: usize,
    filter: impl Fn(&Attempt) -> bool,
) -> anyhow::Result<()> {
    let count = |attempts: Vec<Attempt>| attempts.iter().filter(|a| a.ok() && filter(a)).count();
    let target = count(load.attempts()) + more;
    let waited = eventually("acknowledged writes", WAIT, || async {
        (count(load.attempts()) >= target).then_some(())
    })
    .await;
    if waited.is_err() {
        let mut kinds: BTreeMap<(String, String), usize> = BTreeMap::new();
        let recent = load.elapsed_ms().saturating_sub(10_000);
        for a in load
            .attempts()
            .iter()
            .filter(|a| filter(a) && a.start_ms > recent)
        {
            let outcome = a.error.clone().unwrap_or_else(|| "ok".into());
            *kinds.entry((a.via.clone(), outcome)).or_default() += 1;
        }
        println!("attempts of the last 10 s by (via, outcome): {kinds:?}");
    }
    waited
}

/// Waits until every region converged with nothing pending, then checks the invariants.
async fn healed_invariants(
    cluster: &Cluster,
    acked: &[AckedWrite],
) -> anyhow::Result<audit::InvariantReport> {
    let history = audit::history(cluster).await?;
    let last = std::sync::Mutex::new(None);
    let healed = eventually(
        "regions converge with invariants holding",
        Duration::from_secs(120),
        || async {
            let snapshots = audit::snapshots(cluster).await.ok()?;
            let report = audit::check_invariants(&snapshots, &history, acked, &Default::default());
            if report.ok() {
                return Some(report);
            }
            *last.lock().ok()? = Some(report);
            None
        },
    )
    .await;
    healed.map_err(|e| {
        let checks = last.lock().ok().and_then(|l| l.clone()).map(|r| r.checks);
        e.context(format!(
            "invariants did not hold after healing: {checks:#?}"
        ))
    })
}

async fn promote_after_lease(
    cluster: &Cluster,
    region: &str,
) -> anyhow::Result<failover::promote::PromoteReport> {
    let options = PromoteOptions {
        force: false,
        apply_timeout: Duration::from_secs(3),
    };
    eventually("promote once the lease ran out", WAIT, || async {
        match failover::promote::promote(cluster, region, options).await {
            Ok(report) => Some(Ok(report)),
            Err(FailoverError::Refused(_)) => None,
            Err(other) => Some(Err(other)),
        }
    })
    .await?
    .map_err(Into::into)
}

#[tokio::test]
async fn switchover_under_writes_loses_nothing_and_rehome_moves_one_account() -> anyhow::Result<()>
{
    let regions = Regions::start("switchover", &[]).await?;
    let cluster = Cluster::new(&targets(&regions), "test")?;
    let load = start_load(&regions, 4, false).await?;
    await_acks(&load, 60, |_| true).await?;

    let from = regions.name(0);
    let to = regions.name(1);
    let moved_slots: Vec<u32> = cluster
        .map()
        .await?
        .slots
        .iter()
        .enumerate()
        .filter(|(_, o)| o.region == from)
        .map(|(s, _)| s as u32)
        .collect();
    let moves =
        failover::switchover::switch_region(&cluster, &from, &to, SwitchoverOptions::default())
            .await
            .map_err(|p| p.error)?;
    assert_eq!(moves.len(), 1, "one slot move (no overrides yet)");
    assert_eq!(moves[0].slots, moved_slots);
    println!(
        "switchover frozen-to-serving {} ms (drain {} ms, catch-up {} ms)",
        moves[0].unavailable_ms, moves[0].drain_ms, moves[0].catch_up_ms
    );
    let map = cluster.map().await?;
    assert!(moved_slots
        .iter()
        .all(|s| map.slots[*s as usize].region == to && !map.slots[*s as usize].frozen));

    // Writes to the moved accounts succeed at the new home.
    let moved: HashSet<String> = load
        .accounts
        .iter()
        .filter(|a| a.home == from)
        .map(|a| a.id.clone())
        .collect();
    let switched_at = load.elapsed_ms();
    await_acks(&load, 30, |a| {
        moved.contains(&a.account) && a.start_ms > switched_at
    })
    .await?;
    let attempts = load.stop().await;
    let acked = acknowledged(&attempts, false);
    let report = healed_invariants(&cluster, &acked).await?;
    // RPO 0: every acknowledged write is present as itself (no reconciliation replay).
    let snapshots = audit::snapshots(&cluster).await?;
    for snapshot in &snapshots {
        assert!(
            snapshot.entries.iter().all(|e| e.reconciles.is_none()),
            "no replay needed in {}",
            snapshot.region
        );
    }
    println!("{report:#?}");
    let figures = failover::drill::figures::compute(
        &attempts,
        &load_accounts(&attempts),
        (
            switched_at.saturating_sub(moves[0].unavailable_ms),
            switched_at,
        ),
        None,
        &[],
        &snapshots,
        None,
    );
    println!(
        "per-slot write unavailability: p50 {:?} p99 {:?} max {:?} over {} slots; errors {:?}",
        figures.per_slot_p50_ms,
        figures.per_slot_p99_ms,
        figures.per_slot_max_ms,
        figures.per_slot_ms.len(),
        figures.errors_by_kind
    );
    assert!(
        !figures.per_slot_ms.is_empty(),
        "the switchover window was measured"
    );

    // Rehome: one account of two sharing a slot moves; its neighbour stays.
    let mut by_slot: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut opened = 0;
    while !by_slot.values().any(|ids| ids.len() >= 2) {
        let id = regions.open(2, 2, "10.00").await?;
        let account: AccountId = id.parse()?;
        by_slot.entry(account.slot()).or_default().push(id);
        opened += 1;
        anyhow::ensure!(opened < 60, "no two accounts shared a slot");
    }
    let pair = by_slot
        .values()
        .find(|ids| ids.len() >= 2)
        .cloned()
        .unwrap_or_default();
    let (mover, neighbour): (AccountId, AccountId) = (pair[0].parse()?, pair[1].parse()?);
    let report =
        failover::switchover::rehome(&cluster, mover, &to, SwitchoverOptions::default()).await?;
    println!("rehome took {} ms", report.unavailable_ms);
    let map = cluster.map().await?;
    assert_eq!(
        map.home_of(mover).map(|(r, _)| r.to_owned()),
        Some(to.clone())
    );
    assert_eq!(
        map.home_of(neighbour).map(|(r, _)| r.to_owned()),
        Some(regions.name(2))
    );
    let client = regions.client(0);
    for (account, home) in [(mover, to.clone()), (neighbour, regions.name(2))] {
        // A client retries a 503 (a region whose map has not caught up yet refuses a
        // second forwarding hop) with the same key.
        let key = uuid::Uuid::new_v4().to_string();
        let (sample, body) = eventually("deposit answered 201", WAIT, || async {
            let answer = client
                .post(
                    "deposit",
                    &format!("/v1/accounts/{account}/deposits"),
                    &serde_json::json!({"amount": "1.00"}),
                    Some(&key),
                    None,
                )
                .await
                .ok()?;
            (answer.0.status == 201).then_some(answer)
        })
        .await?;
        assert_eq!(sample.status, 201, "{body}");
        assert_eq!(
            sample.home.as_deref(),
            Some(home.as_str()),
            "{account} is served by its home"
        );
    }
    Ok(())
}

/// The accounts a list of attempts touched (slot from the id), for figures.
fn load_accounts(attempts: &[Attempt]) -> Vec<workload::Account> {
    let mut seen = HashSet::new();
    attempts
        .iter()
        .filter(|a| seen.insert(a.account.clone()))
        .map(|a| workload::Account {
            id: a.account.clone(),
            slot: a.slot,
            home: String::new(),
        })
        .collect()
}

async fn kill_promote_return(label: &str, replicated: bool) -> anyhow::Result<()> {
    let mut regions = Regions::start(label, &[]).await?;
    let cluster = Cluster::new(&targets(&regions), "test")?;
    let load = start_load(&regions, 4, replicated).await?;
    let victim = regions.name(2);
    let homed: HashSet<String> = load
        .accounts
        .iter()
        .filter(|a| a.home == victim)
        .map(|a| a.id.clone())
        .collect();
    await_acks(&load, 40, |_| true).await?;
    // The accounts themselves reached every region (their opening is not the tail
    // this test is about).
    eventually("workload accounts replicated everywhere", WAIT, || async {
        let snapshots = audit::snapshots(&cluster).await.ok()?;
        snapshots
            .iter()
            .all(|s| {
                homed
                    .iter()
                    .all(|id| s.accounts.iter().any(|a| &a.id == id))
            })
            .then_some(())
    })
    .await?;
    if !replicated {
        // Hold the victim's relay so that writes it acknowledges stay unpublished: the
        // kill then certainly loses a tail that must be reconciled.
        let relay = regions
            .deployment
            .region(&victim)?
            .pid("replicator")
            .expect("replicator pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(relay as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )?;
        await_acks(&load, 10, |a| homed.contains(&a.account)).await?;
    }
    let kill_ms = load.elapsed_ms();
    regions.deployment.kill_region(&victim)?;
    let acked_before: Vec<AckedWrite> = acknowledged(&load.attempts(), replicated)
        .into_iter()
        .filter(|w| homed.contains(&w.account))
        .collect();
    let snapshots_after_kill: Vec<_> = {
        let mut s = Vec::new();
        for r in [regions.name(0), regions.name(1)] {
            s.push(failover::audit::snapshot(&cluster, &r).await?);
        }
        s
    };
    let unreplicated: Vec<&AckedWrite> = acked_before
        .iter()
        .filter(|w| {
            !snapshots_after_kill
                .iter()
                .any(|s| s.entries.iter().any(|e| e.txn_id == w.txn_id))
        })
        .collect();
    println!(
        "acknowledged writes to {victim} before the kill: {}, in no survivor: {}",
        acked_before.len(),
        unreplicated.len()
    );
    if replicated {
        assert!(
            unreplicated.is_empty(),
            "ack=replicated: every acknowledged write is in a survivor"
        );
    } else {
        assert!(
            !unreplicated.is_empty(),
            "the held relay left acknowledged writes unpublished"
        );
    }

    if replicated {
        // The automatic mode: it promotes once the lease has been expired for 500 ms.
        let stop = tokio_util::sync::CancellationToken::new();
        let auto = failover::promote::auto(
            &cluster,
            Duration::from_millis(500),
            Duration::from_secs(3),
            stop.clone(),
        );
        let watch = async {
            let seen = eventually("automatic promote", WAIT, || async {
                let map = cluster.map().await.ok()?;
                map.regions
                    .iter()
                    .any(|r| r.name == victim && r.status == RegionStatus::Down)
                    .then_some(())
            })
            .await;
            stop.cancel();
            seen
        };
        let (automatic, seen) = tokio::join!(auto, watch);
        automatic?;
        seen?;
        println!("promoted automatically");
    } else {
        let promoted = promote_after_lease(&cluster, &victim).await?;
        println!("promote: {promoted:?}");
    }
    await_acks(&load, 20, |a| {
        homed.contains(&a.account) && a.start_ms > kill_ms
    })
    .await?;
    let first_success = load
        .attempts()
        .iter()
        .filter(|a| a.ok() && a.start_ms > kill_ms && homed.contains(&a.account))
        .map(|a| a.end_ms)
        .min()
        .unwrap_or_default();
    println!(
        "RTO (kill to first write served elsewhere): {} ms at lease ttl {} ms",
        first_success - kill_ms,
        regions.deployment.lease_ttl_ms
    );

    regions.deployment.restart_region(&victim).await?;
    let restarted_ms = load.elapsed_ms();
    await_acks(&load, 40, |a| a.start_ms > restarted_ms).await?;
    let attempts = load.stop().await;
    let acked = acknowledged(&attempts, replicated);
    let report = healed_invariants(&cluster, &acked).await?;
    println!("{report:#?}");
    // Deposed: the returned region committed nothing of its own after it came back.
    let db = regions.db(2).await?;
    let own_after: i64 = db.query_one(
        "SELECT count(*) FROM ledger.entries WHERE origin_region = $1 AND created_at > now() - make_interval(secs => $2)",
        &[&victim, &((load_elapsed_since(restarted_ms, &attempts)) as f64 / 1000.0)]).await?.get(0);
    assert_eq!(
        own_after, 0,
        "the deposed region wrote nothing after returning"
    );
    let late: Vec<(String, i64)> = db
        .query(
            "SELECT status, count(*) FROM ledger.late_events GROUP BY status",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    println!("late events at {victim}: {late:?}");
    if !replicated {
        // Every unreplicated acknowledged write was reconciled (or was written again
        // by a retry with the same key) at the new home.
        let snapshots = audit::snapshots(&cluster).await?;
        for write in &unreplicated {
            let entry = snapshots[0]
                .entries
                .iter()
                .find(|e| e.txn_id == write.txn_id);
            assert!(entry.is_some(), "{write:?} is in the ledger");
        }
        let replays = snapshots[0]
            .entries
            .iter()
            .filter(|e| e.reconciles.is_some())
            .count();
        println!("reconciliation replays: {replays}");

        // Failback with RPO 0 under writes.
        let load = start_load_homed(&regions, 2, false, std::slice::from_ref(&victim)).await?;
        await_acks(&load, 20, |_| true).await?;
        let moves = eventually("failback once reconciled", WAIT, || async {
            failover::switchover::failback(&cluster, &victim, SwitchoverOptions::default())
                .await
                .ok()
        })
        .await?;
        println!(
            "failback: {:?}",
            moves
                .iter()
                .map(|m| (m.from.clone(), m.slots.len(), m.unavailable_ms))
                .collect::<Vec<_>>()
        );
        let map = cluster.map().await?;
        assert!(
            map.slot_counts().get(victim.as_str()).copied().unwrap_or(0) > 0,
            "{victim} owns slots again"
        );
        await_acks(&load, 20, |_| true).await?;
        let attempts = load.stop().await;
        healed_invariants(&cluster, &acknowledged(&attempts, false)).await?;
    }
    Ok(())
}

fn load_elapsed_since(since_ms: u64, attempts: &[Attempt]) -> u64 {
    attempts
        .iter()
        .map(|a| a.end_ms)
        .max()
        .unwrap_or(since_ms)
        .saturating_sub(since_ms)
        + 1_000
}

#[tokio::test]
async fn kill_with_ack_local_then_promote_return_reconcile_and_failback() -> anyhow::Result<()> {
    kill_promote_return("kill-local", false).await
}

#[tokio::test]
async fn kill_with_ack_replicated_loses_no_acknowledged_write() -> anyhow::Result<()> {
    kill_promote_return("kill-replicated", true).await
}

#[tokio::test]
async fn drill_reports_and_fails_when_an_invariant_breaks() -> anyhow::Result<()> {
    let regions = Regions::start("drill", &[]).await?;
    let bin = common::bin_dir().join("failover");
    let report_dir = regions.deployment.data_dir.join("report");
    let run = |extra: Vec<String>| {
        let mut command = std::process::Command::new(&bin);
        command.args([
            "--deployment",
            &regions.deployment.data_dir.display().to_string(),
            "drill",
            "--scenario",
            "rehome",
            "--region",
            &regions.name(0),
            "--to",
            &regions.name(1),
            "--rate",
            "40",
            "--warmup-s",
            "1",
            "--observe-s",
            "1",
            "--heal-timeout-s",
            "60",
            "--report-dir",
            &report_dir.display().to_string(),
        ]);
        command.args(extra);
        command.output()
    };
    let clean = run(Vec::new())?;
    let stdout = String::from_utf8_lossy(&clean.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&clean.stderr));
    assert!(clean.status.success(), "a clean drill passes");
    assert!(stdout.contains("drill PASSED"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json"))?)?;
    assert_eq!(
        report["invariants"]["checks"].as_array().map(Vec::len),
        Some(9),
        "the nine invariants, reads included"
    );
    assert!(std::fs::read_to_string(report_dir.join("report.html"))?.contains("<svg"));

    // Inject: one region's copy of an account gains money from nowhere.
    let url = &regions.deployment.regions[2].database_url;
    let inject = format!("psql '{url}' -q -c \"UPDATE ledger.accounts SET balance = balance + 1 WHERE id = (SELECT min(id) FROM ledger.accounts)\"");
    let broken = run(vec!["--before-audit-cmd".into(), inject])?;
    let stdout = String::from_utf8_lossy(&broken.stdout);
    let stderr = String::from_utf8_lossy(&broken.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        !broken.status.success(),
        "a drill that breaks an invariant exits non-zero"
    );
    assert!(
        stdout.contains("[FAIL] money conserved"),
        "it says which invariant broke"
    );
    assert!(stdout.contains("[FAIL] convergence"));
    assert!(stderr.contains("drill broke invariants"));
    Ok(())
}
