//! Replication between two real regions (PostgreSQL, region node, Tansu broker each) with
//! real `ledger-replicator` processes: order, crash recovery of relay, applier and
//! broker, duplicates, poison events, relay takeover, late events.

mod common;

use std::time::Duration;

use anyhow::Context;
use common::{open_accounts, spawn_writes, wait_count, TwoRegions, A, A_EPOCH};
use ledger_wire::events::{self, EventEnvelope};
use nix::sys::signal::Signal;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const CONVERGE: Duration = Duration::from_secs(60);
const PUBLISHED_A: &str = "SELECT count(*) FROM ledger.outbox WHERE published_at IS NOT NULL";
const APPLIED_B: &str = "SELECT count(*) FROM ledger.entries WHERE applied_at IS NOT NULL";

/// Reads every message of `topic` on `brokers` (from the start, until `expected` are in).
fn read_topic(brokers: &str, topic: &str, expected: usize) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .context("create test consumer")?;
    consumer.subscribe(&[topic]).context("subscribe")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut messages = Vec::new();
    while messages.len() < expected && std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            messages.push(message.detach());
        }
    }
    anyhow::ensure!(
        messages.len() >= expected,
        "read {} of {expected} messages from {topic}",
        messages.len()
    );
    Ok(messages)
}

async fn produce(brokers: &str, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("create test producer")?;
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce to {topic}: {e}"))?;
    Ok(())
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_in_a_appear_in_b_in_seq_order_with_identical_balances() -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-order").await?;
    let _relay = regions.relay_a().await?;
    let applier = regions.applier_b().await?;
    let accounts = open_accounts(&regions.a.api, 12).await?;
    spawn_writes(regions.a.api.clone(), accounts.clone(), 300).await??;
    regions.wait_converged(CONVERGE).await?;

    let b = regions.b.db().await?;
    let out_of_order: i64 = b
        .query_one(
            "SELECT count(*) FROM (
                 SELECT applied_at < lag(applied_at) OVER (PARTITION BY account_id ORDER BY seq)
                        AS earlier
                 FROM ledger.entries) x WHERE earlier",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        out_of_order, 0,
        "an account's entries applied out of seq order"
    );
    let violations = ledger_tests::db::bookkeeping_violations(&b).await?;
    assert!(violations.is_empty(), "{violations:?}");
    for id in &accounts {
        let (home, replica) = (
            regions.a.api.account(*id).await?,
            regions.b.api.account(*id).await?,
        );
        assert_eq!(
            (home.balance, home.seq, home.epoch),
            (replica.balance, replica.seq, replica.epoch)
        );
        assert_eq!(replica.home_region, A);
    }
    assert!(
        applier
            .metric("ledger_replication_events_applied_total")
            .await?
            > 300.0
    );

    // Any Kafka client can read the topic: a CloudEvents envelope with trace context.
    let topic = events::events_topic(A);
    let messages = tokio::task::spawn_blocking({
        let brokers = regions.broker_a.addr();
        move || read_topic(&brokers, &topic, 5)
    })
    .await??;
    let first = &messages[0];
    let envelope = EventEnvelope::decode(first.payload().unwrap_or_default())?;
    assert_eq!(envelope.originregion, A);
    assert_eq!(envelope.epoch, A_EPOCH);
    assert_eq!(
        header(first, "content-type").as_deref(),
        Some(events::CONTENT_TYPE)
    );
    let traceparent = header(first, "traceparent").context("traceparent header")?;
    assert!(
        ledger_wire::TraceParent::parse(&traceparent).is_some(),
        "{traceparent}"
    );
    assert_eq!(
        first.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        Some(envelope.subject.clone())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_batch_loses_nothing_and_applies_nothing_twice() -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-relay-kill").await?;
    let _applier = regions.applier_b().await?;
    let accounts = open_accounts(&regions.a.api, 8).await?;
    // A backlog first, so the relay is certainly mid-way when it dies.
    spawn_writes(regions.a.api.clone(), accounts.clone(), 400).await??;
    let writes = spawn_writes(regions.a.api.clone(), accounts.clone(), 200);
    // Small batches and a small window: many round trips, so the kill lands mid-way
    // with rows in flight.
    let mut relay = regions
        .relay_a_with(&[("LEDGER_RELAY_BATCH", "5"), ("LEDGER_RELAY_WINDOW", "5")])
        .await?;
    let a = regions.a.db().await?;
    let published = wait_count(&a, PUBLISHED_A, 50, CONVERGE).await?;
    relay.process.signal(Signal::SIGKILL)?;
    relay.process.stop();
    let total: i64 = a
        .query_one("SELECT count(*) FROM ledger.outbox", &[])
        .await?
        .get(0);
    let after_kill: i64 = a.query_one(PUBLISHED_A, &[]).await?.get(0);
    assert!(
        after_kill < total,
        "the relay had finished before the kill ({published} of {total})"
    );
    let _relay = regions.relay_a().await?;
    writes.await??;
    regions.wait_converged(CONVERGE).await?;
    let b = regions.b.db().await?;
    let violations = ledger_tests::db::bookkeeping_violations(&b).await?;
    assert!(violations.is_empty(), "{violations:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_applier_killed_mid_batch_has_an_exactly_once_effect() -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-applier-kill").await?;
    let _relay = regions.relay_a().await?;
    let accounts = open_accounts(&regions.a.api, 8).await?;
    spawn_writes(regions.a.api.clone(), accounts.clone(), 400).await??;
    let writes = spawn_writes(regions.a.api.clone(), accounts.clone(), 200);
    let mut applier = regions
        .applier_b_with(&[("LEDGER_APPLY_BATCH", "5")])
        .await?;
    let b = regions.b.db().await?;
    wait_count(&b, APPLIED_B, 50, CONVERGE).await?;
    applier.process.signal(Signal::SIGKILL)?;
    applier.process.stop();
    let applied: i64 = b.query_one(APPLIED_B, &[]).await?.get(0);
    let a = regions.a.db().await?;
    let entries_a: i64 = a
        .query_one("SELECT count(*) FROM ledger.entries", &[])
        .await?
        .get(0);
    assert!(
        applied < entries_a,
        "the applier had finished before the kill"
    );
    let _applier = regions.applier_b().await?;
    writes.await??;
    regions.wait_converged(CONVERGE).await?;
    let violations = ledger_tests::db::bookkeeping_violations(&b).await?;
    assert!(violations.is_empty(), "{violations:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_and_applier_resume_by_themselves_after_a_broker_restart() -> anyhow::Result<()> {
    let mut regions = TwoRegions::start("repl-broker-restart").await?;
    let mut relay = regions.relay_a().await?;
    let mut applier = regions.applier_b().await?;
    let accounts = open_accounts(&regions.a.api, 6).await?;
    spawn_writes(regions.a.api.clone(), accounts.clone(), 100).await??;
    regions.wait_converged(CONVERGE).await?;

    regions.broker_a.kill()?;
    // Writes while the broker is down pile up in A's outbox.
    spawn_writes(regions.a.api.clone(), accounts.clone(), 100).await??;
    regions.broker_a.restart().await?;
    assert!(
        regions.broker_a.headers_indexed()?,
        "the broker's header index is in place after a SIGKILL and a restart"
    );
    spawn_writes(regions.a.api.clone(), accounts.clone(), 100).await??;
    regions.wait_converged(CONVERGE).await?;
    assert!(relay.process.exited().is_none(), "the relay exited");
    assert!(applier.process.exited().is_none(), "the applier exited");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_applies_once_and_poison_goes_to_the_dlq() -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-dup-poison").await?;
    let _relay = regions.relay_a().await?;
    let applier = regions.applier_b().await?;
    let accounts = open_accounts(&regions.a.api, 3).await?;
    regions.wait_converged(CONVERGE).await?;

    let topic = events::events_topic(A);
    let messages = tokio::task::spawn_blocking({
        let (brokers, topic) = (regions.broker_a.addr(), topic.clone());
        move || read_topic(&brokers, &topic, 6)
    })
    .await??;
    let again = messages.last().context("a message")?;
    let key = String::from_utf8_lossy(again.key().unwrap_or_default()).into_owned();
    produce(
        &regions.broker_a.addr(),
        &topic,
        &key,
        again.payload().unwrap_or_default(),
    )
    .await?;
    produce(&regions.broker_a.addr(), &topic, "junk", b"not an envelope").await?;
    let mut wrong_version: serde_json::Value =
        serde_json::from_slice(again.payload().unwrap_or_default())?;
    wrong_version["envelopeversion"] = 99.into();
    produce(
        &regions.broker_a.addr(),
        &topic,
        &key,
        &serde_json::to_vec(&wrong_version)?,
    )
    .await?;
    // Writes after the poison still replicate.
    regions.a.api.fund(accounts[0], "7.00").await?;
    regions.wait_converged(CONVERGE).await?;

    let duplicates = harness::wait_until(CONVERGE, Duration::from_millis(50), || async {
        let n = applier
            .metric("ledger_replication_events_applied_total{origin=\"a\",outcome=\"duplicate\",region=\"b\"}")
            .await
            .ok()?;
        (n >= 1.0).then_some(n)
    })
    .await;
    assert!(
        duplicates.is_some(),
        "the duplicate was not reported as skipped"
    );

    let dead = tokio::task::spawn_blocking({
        let brokers = regions.broker_b.addr();
        move || read_topic(&brokers, &events::dlq_topic(common::B), 2)
    })
    .await??;
    assert_eq!(
        applier
            .metric("ledger_replication_dlq_events_total")
            .await?,
        2.0,
        "exactly the two poison events are dead-lettered"
    );
    let errors: Vec<String> = dead
        .iter()
        .map(|m| header(m, events::headers::DLQ_ERROR).unwrap_or_default())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("not an event envelope")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("version 99")),
        "{errors:?}"
    );
    let junk = dead
        .iter()
        .find(|m| m.payload() == Some(&b"not an envelope"[..]))
        .context("the junk message, verbatim")?;
    assert_eq!(header(junk, events::headers::DLQ_TOPIC), Some(topic));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_relay_waits_for_the_lock_and_takes_over() -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-takeover").await?;
    let _applier = regions.applier_b().await?;
    let mut first = regions.relay_a().await?;
    let active = harness::wait_until(CONVERGE, Duration::from_millis(50), || async {
        (first.metric("ledger_replication_relay_active").await.ok()? == 1.0).then_some(())
    })
    .await;
    assert!(active.is_some(), "the first relay never became active");
    let second = regions.relay_a().await?;
    let accounts = open_accounts(&regions.a.api, 3).await?;
    regions.wait_converged(CONVERGE).await?;
    assert_eq!(second.metric("ledger_replication_relay_active").await?, 0.0);
    assert_eq!(
        second
            .metric("ledger_replication_events_published_total")
            .await?,
        0.0
    );

    first.process.signal(Signal::SIGKILL)?;
    first.process.stop();
    let took_over = harness::wait_until(CONVERGE, Duration::from_millis(50), || async {
        (second
            .metric("ledger_replication_relay_active")
            .await
            .ok()?
            == 1.0)
            .then_some(())
    })
    .await;
    assert!(took_over.is_some(), "the standby relay did not take over");
    spawn_writes(regions.a.api.clone(), accounts, 60).await??;
    regions.wait_converged(CONVERGE).await?;
    assert!(
        second
            .metric("ledger_replication_events_published_total")
            .await?
            >= 60.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_event_is_stored_for_reconciliation_not_applied_nor_dropped() -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-late").await?;
    let _relay = regions.relay_a().await?;
    let _applier = regions.applier_b().await?;
    let accounts = open_accounts(&regions.a.api, 1).await?;
    regions.a.api.fund(accounts[0], "5.00").await?;
    regions.wait_converged(CONVERGE).await?;

    // A deposed owner (epoch 3, below A's 5) wrote seq 2 and seq 4 of this account.
    let topic = events::events_topic(A);
    let messages = tokio::task::spawn_blocking({
        let (brokers, topic) = (regions.broker_a.addr(), topic.clone());
        move || read_topic(&brokers, &topic, 3)
    })
    .await??;
    let template = messages
        .iter()
        .filter_map(|m| EventEnvelope::decode(m.payload().unwrap_or_default()).ok())
        .find(|e| e.seq == 2)
        .context("the seq 2 event")?;
    let mut forged = Vec::new();
    for seq in [2, 4] {
        let mut event = template.clone();
        event.id = uuid::Uuid::new_v4();
        event.epoch = A_EPOCH - 2;
        event.seq = seq;
        event.data["seq"] = seq.into();
        event.data["epoch"] = event.epoch.into();
        produce(
            &regions.broker_a.addr(),
            &topic,
            &event.subject,
            &serde_json::to_vec(&event)?,
        )
        .await?;
        forged.push(event.id);
    }
    // seq 3 by A (epoch 5) applies; the forged seq 2 is taken by a higher epoch, and the
    // forged seq 4 comes from an epoch older than the account's last writer.
    regions.a.api.fund(accounts[0], "1.00").await?;
    let b = regions.b.db().await?;
    wait_count(&b, "SELECT count(*) FROM ledger.late_events", 2, CONVERGE).await?;
    regions.wait_converged(CONVERGE).await?;
    let late = b
        .query(
            "SELECT event_id, seq, epoch, reason, status, event->>'id' FROM ledger.late_events
             ORDER BY seq",
            &[],
        )
        .await?;
    let late: Vec<(uuid::Uuid, i64, i64, String, String)> = late
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        late,
        vec![
            (
                forged[0],
                2,
                A_EPOCH - 2,
                "seq_taken".to_owned(),
                "pending".to_owned()
            ),
            (
                forged[1],
                4,
                A_EPOCH - 2,
                "stale_epoch".to_owned(),
                "pending".to_owned()
            ),
        ]
    );
    let replica = regions.b.api.account(accounts[0]).await?;
    assert_eq!((replica.seq, replica.epoch), (3, A_EPOCH));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_outbox_row_of_a_fresh_region_committed_last_still_goes_out() -> anyhow::Result<()>
{
    let regions = TwoRegions::start("repl-first-row").await?;
    let _relay = regions.relay_a().await?;
    let a = regions.a.db().await?;
    // The relay has taken its floor and reads: its session's last statement is the read.
    wait_count(
        &a,
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'ledger-relay/a'
           AND query LIKE '%published_at IS NULL AND (id >%'",
        1,
        CONVERGE,
    )
    .await?;
    // Outbox id 1 is taken by a transaction that commits after later ids were published
    // (4 accounts opened at once on a fresh region do this by themselves).
    let held = regions.a.db().await?;
    held.batch_execute("BEGIN").await?;
    let first: i64 = held
        .query_one(
            "INSERT INTO ledger.outbox
                 (event_id, event_type, account_id, seq, epoch, origin_region, payload,
                  created_at)
             VALUES (gen_random_uuid(), 'AccountOpened', 1, 1, $1, 'a', '{}', now())
             RETURNING id",
            &[&A_EPOCH],
        )
        .await?
        .get(0);
    assert_eq!(first, 1, "the held row is the region's first outbox row");
    open_accounts(&regions.a.api, 2).await?;
    wait_count(&a, PUBLISHED_A, 4, CONVERGE).await?;
    held.batch_execute("COMMIT").await?;
    wait_count(
        &a,
        "SELECT count(*) FROM ledger.outbox WHERE id = 1 AND published_at IS NOT NULL",
        1,
        CONVERGE,
    )
    .await
    .context("the first outbox row was never published")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outbox_row_committed_after_higher_ids_were_published_still_goes_out(
) -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-holes").await?;
    let _relay = regions.relay_a().await?;
    let _applier = regions.applier_b().await?;
    let accounts = open_accounts(&regions.a.api, 2).await?;
    regions.wait_converged(CONVERGE).await?;

    // A write whose transaction takes its outbox id now but commits later.
    let held = regions.a.db().await?;
    held.batch_execute("BEGIN").await?;
    let status: i32 = held
        .query_one(
            "SELECT (ledger.post_entry('held', '\\x00'::bytea, 'deposit', $1, 3.00, NULL, $2,
                                       'a', NULL)).status",
            &[&accounts[0].as_i64(), &A_EPOCH],
        )
        .await?
        .get(0);
    assert_eq!(status, 201);
    let held_id: i64 = held
        .query_one(
            "SELECT id FROM ledger.outbox WHERE account_id = $1 AND seq = 2",
            &[&accounts[0].as_i64()],
        )
        .await?
        .get(0);
    // Later ids commit and are published and applied first.
    spawn_writes(regions.a.api.clone(), vec![accounts[1]], 20).await??;
    let b = regions.b.db().await?;
    let seq_sql = format!(
        "SELECT seq FROM ledger.accounts WHERE id = {}",
        accounts[1].as_i64()
    );
    wait_count(&b, &seq_sql, 21, CONVERGE).await?;
    let a = regions.a.db().await?;
    let highest_published: i64 = a
        .query_one(
            "SELECT max(id) FROM ledger.outbox WHERE published_at IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert!(
        highest_published > held_id,
        "the relay never read past the held id"
    );
    assert_eq!(regions.b.api.account(accounts[0]).await?.seq, 1);

    held.batch_execute("COMMIT").await?;
    regions.wait_converged(CONVERGE).await?;
    let replica = regions.b.api.account(accounts[0]).await?;
    assert_eq!(replica.balance, rust_decimal::Decimal::new(10300, 2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_outbox_rows_are_cleaned_up_on_schedule() -> anyhow::Result<()> {
    let regions = TwoRegions::start("repl-cleanup").await?;
    let relay = regions
        .relay_a_with(&[
            ("LEDGER_OUTBOX_RETENTION_S", "0"),
            ("LEDGER_CLEANUP_INTERVAL_S", "1"),
        ])
        .await?;
    let _applier = regions.applier_b().await?;
    let accounts = open_accounts(&regions.a.api, 3).await?;
    spawn_writes(regions.a.api.clone(), accounts, 30).await??;
    regions.wait_converged(CONVERGE).await?;
    let a = regions.a.db().await?;
    let emptied = harness::wait_until(CONVERGE, Duration::from_millis(100), || async {
        let left: i64 = a
            .query_one("SELECT count(*) FROM ledger.outbox", &[])
            .await
            .ok()?
            .get(0);
        (left == 0).then_some(())
    })
    .await;
    assert!(emptied.is_some(), "published outbox rows were not deleted");
    assert!(
        relay
            .metric("ledger_replication_cleaned_rows_total")
            .await?
            >= 36.0
    );
    // Idempotency records are kept (72 h by default): a retry still replays.
    let keys: i64 = a
        .query_one("SELECT count(*) FROM ledger.idempotency_keys", &[])
        .await?
        .get(0);
    assert!(
        keys >= 36,
        "idempotency records were deleted too early ({keys})"
    );
    Ok(())
}
