//! `replication-bench`: replication lag between two real regions at a fixed write rate,
//! against the broker's own produce-to-consume latency at the same rate with the same
//! client settings, in the same run; then the relay's and the applier's maximum
//! sustained events per second on a backlog.
//!
//! Two regions on loopback, each with its own PostgreSQL (fsync on) and broker (nisshi or Tansu);
//! region A's node (release binary) takes paced deposits over HTTP; `ledger-replicator`
//! processes relay A's outbox and apply it in B. Lag is measured in B's database as
//! `applied_at - created_at` of each entry (created_at is taken at the start of the
//! home's write transaction, so the figure slightly overstates commit-to-apply).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use harness::node::{region_node_command, start_region_node, wait_http_ready};
use harness::{free_port, wait_until, Broker, ChildGuard, PgCluster, PgOptions, WorkDir};
use ledger_bench::percentile_ms;
use nix::sys::signal::Signal;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use replication::envelope::header;
use tokio_postgres::{Client, NoTls};

#[derive(Debug, Parser)]
#[command(about = "Replication lag and throughput between two real regions")]
struct Args {
    /// Writes (and baseline messages) per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of paced load per measurement.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds at the start of each measurement left out of the figures.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Accounts the writes spread over.
    #[arg(long, default_value_t = 1000)]
    accounts: i64,
    /// Events in the backlog for the throughput measurements.
    #[arg(long, default_value_t = 50_000)]
    backlog: i64,
    /// Partitions of the topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Producer linger (ms) of the relay and of the baseline producer alike.
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// Leave out the index the harness adds to Tansu's sqlite `header` table, to
    /// measure what it is worth (harness::broker::index_headers).
    #[arg(long)]
    without_header_index: bool,
    /// Retention of a's events topic in ms (the relay creates it so), to measure the
    /// brokers' retention passes under load; default: 7 days, no pass deletes anything.
    #[arg(long)]
    retention_ms: Option<u64>,
    /// How often the brokers run their maintenance (the retention pass), in ms.
    #[arg(long, default_value_t = 60_000)]
    maintenance_ms: u64,
}

struct Setup {
    dir: WorkDir,
    bin_dir: PathBuf,
    pg_a: PgCluster,
    pg_b: PgCluster,
    url_a: String,
    url_b: String,
    broker_a: Broker,
    broker_b: Broker,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = ledger_bench::sibling_bin_dir(&["region-node", "ledger-replicator"])?;
    let dir = WorkDir::temp("bench-replication").context("make bench dir")?;
    let options = PgOptions {
        durable: true,
        ..PgOptions::default()
    };
    for part in ["pg-a", "pg-b"] {
        std::fs::create_dir_all(dir.join(part)).context("make PostgreSQL dirs")?;
    }
    let (pg_a, url_a) = PgCluster::start_with_database(&dir.join("pg-a"), &options, "ledger")
        .await
        .context("start PostgreSQL a")?;
    let (pg_b, url_b) = PgCluster::start_with_database(&dir.join("pg-b"), &options, "ledger")
        .await
        .context("start PostgreSQL b")?;
    let index = !args.without_header_index;
    println!(
        "broker: {} (LEDGER_BROKER), header index: {}",
        harness::broker::BrokerKind::from_env()?,
        if index { "on" } else { "off" }
    );
    let maintenance = std::time::Duration::from_millis(args.maintenance_ms);
    println!(
        "broker maintenance every {} ms; a's topic retention {}",
        args.maintenance_ms,
        args.retention_ms
            .map_or("7 days (default)".to_owned(), |ms| format!("{ms} ms"))
    );
    let broker_a = Broker::start_maintained(&dir.join("broker-a"), index, maintenance).await?;
    let broker_b = Broker::start_maintained(&dir.join("broker-b"), index, maintenance).await?;
    let mut setup = Setup {
        dir,
        bin_dir,
        pg_a,
        pg_b,
        url_a,
        url_b,
        broker_a,
        broker_b,
    };
    let result = run(&args, &setup).await;
    setup.pg_a.stop();
    setup.pg_b.stop();
    result
}

async fn run(args: &Args, setup: &Setup) -> anyhow::Result<()> {
    let node_port = free_port()?;
    let mut command = region_node_command(
        &setup.bin_dir.join("region-node"),
        "a",
        &setup.url_a,
        node_port,
    );
    command.env("LEDGER_LOG", "warn");
    let _node = start_region_node(
        "node-a",
        command,
        node_port,
        &setup.dir.join("node-a.log"),
        Duration::from_secs(30),
    )
    .await?;
    let (db_a, mut db_b) = (connect(&setup.url_a).await?, connect(&setup.url_b).await?);
    ledger_schema::migrate(&mut db_b)
        .await
        .context("migrate b")?;
    for db in [&db_a, &db_b] {
        seed(db, args.accounts).await?;
    }
    println!(
        "replication: {} writes/s for {} s ({} s warm-up), {} accounts, {} partitions, linger {} ms, fsync on, 2 regions on loopback",
        args.rate, args.seconds, args.warmup, args.accounts, args.partitions, args.linger_ms
    );

    // 1. The broker alone, same rate, same client settings as the relay and the applier.
    let baseline = broker_baseline(args, &setup.broker_a.addr()).await?;
    println!(
        "broker produce->consume   p50 {:>7.2} ms  p99 {:>7.2} ms  ({} messages)",
        percentile_ms(&baseline, 50.0),
        percentile_ms(&baseline, 99.0),
        baseline.len()
    );

    // 2. The ledger: paced deposits at A, relay A, applier B.
    let relay = setup.relay_a(args).await?;
    let applier = setup.applier_b(args).await?;
    let started = paced_deposits(args, node_port).await?;
    let total = count(&db_a, "SELECT count(*) FROM ledger.entries").await?;
    let drain = Duration::from_secs(60);
    if wait_for(&db_b, "SELECT count(*) FROM ledger.entries", total, drain)
        .await
        .is_err()
    {
        let applied = count(&db_b, "SELECT count(*) FROM ledger.entries").await?;
        println!(
            "NOT SUSTAINED: {} of {total} writes still unapplied in b {} s after the load ended; \
             the figures below cover applied writes only and understate the lag",
            total - applied,
            drain.as_secs()
        );
        print_where_writes_wait(&db_a, &db_b).await?;
    }
    let lags = lag_samples(&db_b, started + Duration::from_secs(args.warmup)).await?;
    println!(
        "replication lag           p50 {:>7.2} ms  p99 {:>7.2} ms  ({} writes)",
        percentile_ms(&lags, 50.0),
        percentile_ms(&lags, 99.0),
        lags.len()
    );
    let overhead = percentile_ms(&lags, 99.0) - percentile_ms(&baseline, 99.0);
    println!("overhead (lag p99 - broker p99): {overhead:.2} ms (target < 20 ms)");
    if args.retention_ms.is_some() {
        let topic = ledger_wire::events::events_topic("a");
        let left = setup.broker_a.record_count(&topic)?;
        let written = count(&db_a, "SELECT count(*) FROM ledger.outbox").await?;
        println!(
            "retention: a's broker holds {left} records of {topic} after {written} events \
             (the rest deleted by its passes during the measurement)"
        );
    }

    // 3. Throughput on a backlog: stop both, pile up events, time each alone.
    drop(relay);
    drop(applier);
    backlog(&db_a, args.backlog).await?;
    let expected = count(&db_a, "SELECT count(*) FROM ledger.entries").await?;
    let clock = Instant::now();
    let relay = setup.relay_a(args).await?;
    wait_for(
        &db_a,
        "SELECT count(*) FROM ledger.outbox WHERE published_at IS NOT NULL",
        count(&db_a, "SELECT count(*) FROM ledger.outbox").await?,
        Duration::from_secs(600),
    )
    .await?;
    let relay_secs = clock.elapsed().as_secs_f64();
    println!(
        "relay max                 {:>9.0} events/s ({} events in {relay_secs:.2} s, from process start)",
        args.backlog as f64 / relay_secs,
        args.backlog
    );
    drop(relay);
    let clock = Instant::now();
    let (_applier, metrics_port) = setup.applier_b(args).await?;
    wait_for(
        &db_b,
        "SELECT count(*) FROM ledger.entries",
        expected,
        Duration::from_secs(600),
    )
    .await?;
    let applier_secs = clock.elapsed().as_secs_f64();
    let page = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await?
        .text()
        .await?;
    let sample = |name: &str| -> f64 {
        page.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let batches = sample("ledger_replication_apply_batch_seconds_count");
    println!(
        "applier batches: {batches} (mean {:.1} events, mean {:.2} ms in the database)",
        sample("ledger_replication_events_applied_total") / batches,
        1000.0 * sample("ledger_replication_apply_batch_seconds_sum") / batches
    );
    println!(
        "applier max               {:>9.0} events/s ({} events in {applier_secs:.2} s, from process start)",
        args.backlog as f64 / applier_secs,
        args.backlog
    );
    Ok(())
}

/// Which layer holds the writes B has not applied: A's outbox (relay), B's waiting
/// events (a gap in an account's seqs), B's late events, B's positions.
async fn print_where_writes_wait(db_a: &Client, db_b: &Client) -> anyhow::Result<()> {
    let unpublished = count(
        db_a,
        "SELECT count(*) FROM ledger.outbox WHERE published_at IS NULL",
    )
    .await?;
    let waiting = count(db_b, "SELECT count(*) FROM ledger.pending_events").await?;
    let late = count(db_b, "SELECT count(*) FROM ledger.late_events").await?;
    let published = count(
        db_a,
        "SELECT count(*) FROM ledger.outbox WHERE published_at IS NOT NULL",
    )
    .await?;
    let read = count(
        db_b,
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM ledger.replication_positions",
    )
    .await?;
    println!(
        "  where: {unpublished} unpublished in a's outbox; {published} published, b read {read} \
         offsets; {waiting} waiting in b for an earlier seq; {late} late in b"
    );
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The same accounts in both regions (as if their opening had replicated long ago).
async fn seed(db: &Client, accounts: i64) -> anyhow::Result<()> {
    db.execute(
        "INSERT INTO ledger.accounts (id, currency, scale, balance, seq, epoch, home_region,
                                      created_at, updated_at)
         SELECT n, 'EUR', 2, 0.00, 0, 1, 'a', now(), now() FROM generate_series(1, $1::bigint) n",
        &[&accounts],
    )
    .await
    .context("seed accounts")?;
    Ok(())
}

async fn count(db: &Client, sql: &str) -> anyhow::Result<i64> {
    Ok(db.query_one(sql, &[]).await?.get(0))
}

async fn wait_for(db: &Client, sql: &str, target: i64, timeout: Duration) -> anyhow::Result<()> {
    let reached = wait_until(timeout, Duration::from_millis(20), || async {
        (count(db, sql).await.ok()? >= target).then_some(())
    })
    .await;
    reached.with_context(|| format!("{sql} did not reach {target} within {timeout:?}"))
}

/// A `ledger-replicator` process and the port of its metrics page.
impl Setup {
    /// Region a's relay.
    async fn relay_a(&self, args: &Args) -> anyhow::Result<(ChildGuard, u16)> {
        replicator(self, "a", &self.url_a, &self.broker_a.addr(), None, args).await
    }

    /// Region b's applier of a's events.
    async fn applier_b(&self, args: &Args) -> anyhow::Result<(ChildGuard, u16)> {
        let from = format!("a={}", self.broker_a.addr());
        replicator(
            self,
            "b",
            &self.url_b,
            &self.broker_b.addr(),
            Some(&from),
            args,
        )
        .await
    }
}

async fn replicator(
    setup: &Setup,
    region: &str,
    url: &str,
    brokers: &str,
    apply_from: Option<&str>,
    args: &Args,
) -> anyhow::Result<(ChildGuard, u16)> {
    let port = free_port()?;
    let mut command = Command::new(setup.bin_dir.join("ledger-replicator"));
    command
        .env("LEDGER_REGION", region)
        .env("LEDGER_DATABASE_URL", url)
        .env("LEDGER_BROKERS", brokers)
        .env("LEDGER_REPLICATOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEDGER_TOPIC_PARTITIONS", args.partitions.to_string())
        .env("LEDGER_PRODUCER_LINGER_MS", args.linger_ms.to_string())
        .env("LEDGER_LOG", "warn");
    if let Some(ms) = args.retention_ms {
        command.env("LEDGER_TOPIC_RETENTION_MS", ms.to_string());
    }
    if let Some(from) = apply_from {
        command
            .env("LEDGER_RELAY", "false")
            .env("LEDGER_APPLY_FROM", from);
    }
    let log = setup.dir.join(&format!("replicator-{region}-{port}.log"));
    let mut process = ChildGuard::spawn(
        format!("replicator-{region}"),
        command,
        &log,
        Signal::SIGTERM,
    )?;
    wait_http_ready(
        &mut process,
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(30),
    )
    .await?;
    Ok((process, port))
}

/// Sends deposits to A's node at `rate` per second (open loop) for `seconds`; returns
/// when the load started.
async fn paced_deposits(args: &Args, port: u16) -> anyhow::Result<std::time::SystemTime> {
    let client = ledger_client::RegionClient::over_http(
        "a",
        &format!("http://127.0.0.1:{port}"),
        None,
        Duration::from_secs(30),
    )
    .context("build the HTTP client")?;
    let started = std::time::SystemTime::now();
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..total {
        tick.tick().await;
        let account = ledger_wire::AccountId::from_i64(1 + (n as i64 % args.accounts))?;
        let request = ledger_client::Request::post(
            format!("/v1/accounts/{account}/deposits"),
            serde_json::json!({"amount": "1.00"}),
        )
        .with_key(format!("bench-{n}"));
        let client = client.clone();
        requests.spawn(async move { client.send(&request).await.map(|reply| reply.answer.status) });
    }
    let mut refused = std::collections::BTreeMap::<String, u64>::new();
    while let Some(done) = requests.join_next().await {
        let outcome = match done {
            Ok(Ok(201)) => continue,
            Ok(Ok(status)) => format!("HTTP {status}"),
            Ok(Err(e)) => format!("no answer ({e:?})"),
            Err(e) => format!("task failed ({e})"),
        };
        *refused.entry(outcome).or_default() += 1;
    }
    // Refused writes committed nothing; the replication figures cover the rest. A
    // node over its capacity answers 503 once a request waited the pool's limit.
    if !refused.is_empty() {
        let failed: u64 = refused.values().sum();
        println!(
            "OVERLOADED: {failed} of {total} deposits not committed ({refused:?}); \
             the node did not sustain {} writes/s on this machine",
            args.rate
        );
    }
    Ok(started)
}

/// Commit-to-apply delays (µs) of entries written after `since`.
async fn lag_samples(db: &Client, since: std::time::SystemTime) -> anyhow::Result<Vec<u64>> {
    let since: chrono::DateTime<chrono::Utc> = since.into();
    let rows = db
        .query(
            "SELECT (extract(epoch FROM applied_at - created_at) * 1e6)::bigint
             FROM ledger.entries WHERE created_at >= $1 AND applied_at IS NOT NULL",
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, i64>(0).max(0).unsigned_abs())
        .collect())
}

/// `n` deposits booked straight into A's database (no relay running), as the backlog.
async fn backlog(db: &Client, n: i64) -> anyhow::Result<()> {
    let chunk = 5_000;
    let mut done = 0;
    while done < n {
        let size = chunk.min(n - done);
        db.execute(
            "SELECT ledger.post_entry('backlog-' || g, '\\x00'::bytea, 'deposit',
                                      1 + g % (SELECT count(*) FROM ledger.accounts), 1.00,
                                      NULL, 1, 'a', NULL)
             FROM generate_series($1::bigint, $2::bigint) g",
            &[&done, &(done + size - 1)],
        )
        .await
        .context("book backlog")?;
        done += size;
    }
    Ok(())
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Produce-to-consume latency (µs) of the broker alone: a producer and a consumer built
/// by the same functions the relay and applier use, `rate` messages/s of a typical
/// envelope's size with the relay's headers, for `seconds`; the first `warmup` seconds are dropped.
async fn broker_baseline(args: &Args, brokers: &str) -> anyhow::Result<Vec<u64>> {
    let topic = "bench.baseline".to_owned();
    replication::kafka::ensure_topics(brokers, std::slice::from_ref(&topic), args.partitions)
        .await?;
    let producer = replication::kafka::producer(brokers, "bench-baseline", args.linger_ms)?;
    let consumer = Arc::new(replication::kafka::consumer(brokers, "bench-baseline")?);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..args.partitions {
        assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let total = args.rate * args.seconds;
    let skip = args.rate * args.warmup;
    let epoch = Instant::now();
    let reader = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            let mut samples = Vec::new();
            let mut seen = 0;
            while seen < total {
                let Ok(Ok(message)) =
                    tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await
                else {
                    break;
                };
                seen += 1;
                let sent_us = message.key().and_then(|k| {
                    std::str::from_utf8(k)
                        .ok()?
                        .split(':')
                        .nth(1)?
                        .parse::<u64>()
                        .ok()
                });
                let Some(sent_us) = sent_us else { continue };
                if seen > skip {
                    let now_us = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                    samples.push(now_us.saturating_sub(sent_us));
                }
            }
            samples
        }
    });
    let payload = vec![b'x'; 700];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    let mut deliveries = Vec::with_capacity(usize::try_from(total)?);
    for n in 0..total {
        tick.tick().await;
        let sent_us = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(0);
        let key = format!("{}:{sent_us}", n % 1000);
        // The same two headers the relay sets.
        let headers = rdkafka::message::OwnedHeaders::new_with_capacity(2)
            .insert(header("content-type", ledger_wire::events::CONTENT_TYPE))
            .insert(header("traceparent", TRACEPARENT));
        deliveries.push(
            producer
                .send(&topic, Some(key.as_bytes()), &payload, headers)
                .context("produce")?,
        );
    }
    for delivery in deliveries {
        delivery.acknowledged().await.context("delivery")?;
    }
    let samples = reader.await.context("join reader")?;
    anyhow::ensure!(
        !samples.is_empty(),
        "the baseline consumer received nothing"
    );
    Ok(samples)
}
