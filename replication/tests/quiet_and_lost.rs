//! What an applier does when its origin is quiet (it stops fetching and wakes for the
//! next event) and when events vanish from its origin's topic before it read them (an
//! alarm, never a silent skip), with real replicators, brokers and databases.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::{open_accounts, spawn_writes, wait_count, TwoRegions, A};
use harness::wait_until;
use ledger_wire::events;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

const CONVERGE: Duration = Duration::from_secs(60);
const OUTBOX_A: &str = "SELECT count(*) FROM ledger.outbox";
const PUBLISHED_A: &str = "SELECT count(*) FROM ledger.outbox WHERE published_at IS NOT NULL";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_origin_s_applier_stops_fetching_and_wakes_for_the_next_event() -> anyhow::Result<()>
{
    let regions = TwoRegions::start("repl-quiet").await?;
    let _relay = regions.relay_a().await?;
    let applier = regions
        .applier_b_with(&[
            ("LEDGER_APPLY_IDLE_AFTER_MS", "300"),
            ("LEDGER_APPLY_IDLE_POLL_MS", "100"),
        ])
        .await?;
    let accounts = open_accounts(&regions.a.api, 3).await?;
    spawn_writes(regions.a.api.clone(), accounts.clone(), 30).await??;
    regions.wait_converged(CONVERGE).await?;

    for round in 0..3 {
        let waited = Instant::now();
        let idle = wait_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async {
                let idle = applier
                    .metric("ledger_replication_applier_idle")
                    .await
                    .ok()?;
                (idle == 1.0).then_some(())
            },
        )
        .await;
        assert!(
            idle.is_some(),
            "round {round}: the applier of a quiet origin kept fetching"
        );
        eprintln!("round {round}: idle after {:?}", waited.elapsed());
        let applied = applier
            .metric("ledger_replication_events_applied_total")
            .await?;
        let started = Instant::now();
        spawn_writes(regions.a.api.clone(), accounts.clone(), 1).await??;
        regions.wait_converged(CONVERGE).await?;
        let woke_in = started.elapsed();
        eprintln!("round {round}: one write applied by an idle applier in {woke_in:?}");
        assert!(
            applier
                .metric("ledger_replication_events_applied_total")
                .await?
                > applied,
            "round {round}: nothing applied"
        );
        // 100 ms between looks at the origin's ends: a wake-up slower than seconds
        // means the idle applier missed the event.
        assert!(
            woke_in < Duration::from_secs(5),
            "round {round}: the idle applier took {woke_in:?} to apply one write"
        );
    }
    assert_eq!(
        applier
            .metric("ledger_replication_offsets_skipped_total")
            .await?,
        0.0
    );
    // Waking fetches from the applied positions: nothing is read twice (a resumed
    // librdkafka partition refetched the whole session's events).
    let page = reqwest::get(format!("http://127.0.0.1:{}/metrics", applier.port))
        .await?
        .text()
        .await?;
    let read_again: Vec<&str> = page
        .lines()
        .filter(|l| {
            l.starts_with("ledger_replication_events_applied_total")
                && l.contains("outcome=\"duplicate\"")
        })
        .collect();
    assert!(
        read_again.iter().all(|l| l.ends_with(" 0")),
        "{read_again:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_deleted_from_the_origin_s_topic_before_they_were_applied_raise_the_alarm(
) -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-lost").await?;
    regions
        .dir
        .allow_log_errors("events gone from the origin's topic");
    let _relay = regions.relay_a().await?;
    let accounts = open_accounts(&regions.a.api, 6).await?;
    spawn_writes(regions.a.api.clone(), accounts, 60).await??;
    let a = regions.a.db().await?;
    let outbox: i64 = a.query_one(OUTBOX_A, &[]).await?.get(0);
    wait_count(&a, PUBLISHED_A, outbox, CONVERGE).await?;

    // The fullest partition loses offsets 2..5, as a retention pass would delete them.
    let topic = events::events_topic(A);
    let marks = tokio::task::spawn_blocking({
        let (brokers, topic) = (regions.broker_a.addr(), topic.clone());
        move || partition_marks(&brokers, &topic)
    })
    .await??;
    let (partition, end) = marks
        .into_iter()
        .map(|(partition, _, end)| (partition, end))
        .max_by_key(|(_, end)| *end)
        .context("the topic has partitions")?;
    anyhow::ensure!(end >= 6, "partition {partition} holds only {end} events");
    let deleted = regions.broker_a.delete_records(&topic, partition, 2, 5)?;
    assert_eq!(deleted, 3);

    let applier = regions.applier_b().await?;
    let skipped = wait_until(CONVERGE, Duration::from_millis(100), || async {
        let skipped = applier
            .metric("ledger_replication_offsets_skipped_total")
            .await
            .ok()?;
        (skipped > 0.0).then_some(skipped)
    })
    .await;
    assert_eq!(
        skipped,
        Some(3.0),
        "the applier went past deleted offsets without a word"
    );
    // The rest of the partition is read: the applier reports the hole and goes on.
    let b = regions.b.db().await?;
    wait_count(
        &b,
        &format!(
            "SELECT coalesce(max(next_offset), 0) FROM ledger.replication_positions
             WHERE partition = {partition}"
        ),
        end,
        CONVERGE,
    )
    .await?;
    Ok(())
}

/// The broker's own retention pass (Tansu's maintenance, here every second) deletes the
/// events topic's records older than the `retention.ms` the relay created it with; an
/// applier that starts after that (a region down longer than the retention) raises the
/// alarm for every deleted offset, at the session's start, and never resets to the log
/// start silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_s_retention_pass_deletes_old_events_and_a_late_applier_raises_the_alarm(
) -> anyhow::Result<()> {
    let regions = TwoRegions::start_maintained("repl-retention", Duration::from_secs(1)).await?;
    regions
        .dir
        .allow_log_errors("events gone from the origin's topic");
    let _relay = regions
        .relay_a_with(&[("LEDGER_TOPIC_RETENTION_MS", "2000")])
        .await?;
    let accounts = open_accounts(&regions.a.api, 4).await?;
    spawn_writes(regions.a.api.clone(), accounts.clone(), 20).await??;
    let a = regions.a.db().await?;
    let outbox: i64 = a.query_one(OUTBOX_A, &[]).await?.get(0);
    wait_count(&a, PUBLISHED_A, outbox, CONVERGE).await?;

    let topic = events::events_topic(A);
    let configuration = regions.broker_a.topic_configuration(&topic)?;
    for setting in [("cleanup.policy", "delete"), ("retention.ms", "2000")] {
        assert!(
            configuration
                .iter()
                .any(|(k, v)| (k.as_str(), v.as_str()) == setting),
            "the relay created the topic with {setting:?}: {configuration:?}"
        );
    }
    // The broker's own pass deletes every record of the first batch.
    let gone = wait_until(CONVERGE, Duration::from_millis(200), || async {
        let left = regions.broker_a.record_count(&topic).ok()?;
        (left == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the retention pass deleted nothing");
    // Retention lengthened (as an operator would), then a second batch the applier can
    // read: Tansu 0.6 answers an emptied partition's log start as 0, so the loss shows
    // at a partition's first retained record.
    assert_eq!(
        regions
            .broker_a
            .set_topic_configuration(&topic, "retention.ms", "3600000")?,
        1
    );
    spawn_writes(regions.a.api.clone(), accounts, 10).await??;
    let total: i64 = a.query_one(OUTBOX_A, &[]).await?.get(0);
    wait_count(&a, PUBLISHED_A, total, CONVERGE).await?;
    let marks = tokio::task::spawn_blocking({
        let (brokers, topic) = (regions.broker_a.addr(), topic.clone());
        move || partition_marks(&brokers, &topic)
    })
    .await??;
    let deleted: i64 = marks.iter().map(|(_, low, _)| low).sum();
    assert_eq!(
        deleted, outbox,
        "the log starts after the deleted batch: {marks:?}"
    );

    let applier = regions.applier_b().await?;
    let skipped = wait_until(CONVERGE, Duration::from_millis(100), || async {
        let skipped = applier
            .metric("ledger_replication_offsets_skipped_total")
            .await
            .ok()?;
        (skipped >= outbox as f64).then_some(skipped)
    })
    .await;
    assert_eq!(
        skipped,
        Some(outbox as f64),
        "an applier behind the retention went on without a word"
    );
    Ok(())
}

/// Each partition's (low, high) watermarks of `topic`.
fn partition_marks(brokers: &str, topic: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("marks-{}", uuid::Uuid::new_v4()))
        .create()
        .context("create consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("read metadata")?;
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .map(|partition| {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .context("read watermarks")?;
            Ok((partition, low, high))
        })
        .collect()
}
