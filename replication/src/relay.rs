//! The outbox relay: publishes this region's outbox rows, in order, to the region's own
//! topic, and marks each row published only after the broker acknowledged it.
//!
//! Exactly one relay per region is active: it holds a session-level advisory lock on the
//! region's database for as long as its session lives. Others stand by, retrying the
//! lock, and take over when the holder's session ends (a killed process's session ends
//! with its socket). Whoever takes over starts from the oldest unpublished row; rows the
//! old holder had sent but not yet marked go out again, and the appliers skip them by
//! event id.
//!
//! Wake-ups: a notification from the node (rate-limited there), the poll fallback, and,
//! while the last read found rows, a short busy poll.
//!
//! Reading is pipelined: rows are read and sent while earlier ones are still in flight,
//! and a second task marks acknowledged rows. Rows are read past a cursor; because
//! outbox ids are taken at insert but become visible at commit, a lower id can commit
//! after a higher one was read. Such ids are remembered as holes and read again until
//! they appear or are older than any transaction can be (they were rolled back). One
//! account's rows cannot be affected: its next row is inserted only after its previous
//! one committed (the account row lock), so its ids and commits are in the same order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::envelope::OutboxRow;
use crate::producer::{Delivery, Producer};
use crate::{db, kafka, Metrics, ReplicationError, ReplicatorConfig};

/// Advisory lock key of the region's relay (one per database).
pub const RELAY_LOCK_KEY: i64 = 0x6c65_6467_6572_0002;
/// A hole older than this was a rolled-back transaction: writes are single statements
/// bounded by the node's statement timeout, far below this.
const HOLE_TTL: Duration = Duration::from_secs(30);
/// Most holes remembered; beyond this the oldest are forgotten (and logged).
const MAX_HOLES: usize = 100_000;
/// How long after the last read that found rows the relay keeps busy-polling.
const BUSY_WINDOW: Duration = Duration::from_millis(100);

/// Runs the relay until `shutdown`: stand by for the lock, publish while holding it,
/// start again after any failure.
pub async fn run(
    config: Arc<ReplicatorConfig>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let topic = ledger_wire::events::events_topic(&config.region);
    let (config, metrics, topic, token) = (&*config, &metrics, topic.as_str(), &shutdown);
    crate::restart_sessions("relay", &shutdown, move || async move {
        let result = async {
            let retention = config.topic_retention_ms.to_string();
            let configs: &[(&str, &str)] = if config.topic_retention_ms > 0 {
                &[("cleanup.policy", "delete"), ("retention.ms", &retention)]
            } else {
                &[]
            };
            kafka::ensure_topics_with(
                &config.brokers,
                &[topic.to_owned()],
                config.topic_partitions,
                configs,
            )
            .await?;
            session(config, metrics, topic, token).await
        }
        .await;
        metrics.relay_active.set(0);
        if result.is_err() {
            metrics.publish_errors.inc();
        }
        result
    })
    .await;
    Ok(())
}

/// One database session: wait for the lock, then publish until shutdown or failure.
async fn session(
    config: &ReplicatorConfig,
    metrics: &Metrics,
    topic: &str,
    shutdown: &CancellationToken,
) -> Result<(), ReplicationError> {
    let notify = Arc::new(Notify::new());
    let application = format!("ledger-relay/{}", config.region);
    let session = db::connect(config, &application, Some(notify.clone())).await?;
    let mut closed = session.closed.clone();
    let client = Arc::new(session.client);
    let mut said_standby = false;
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LOCK_KEY])
            .await?
            .get(0);
        if locked {
            break;
        }
        if !said_standby {
            tracing::info!("another relay holds the lock; standing by");
            said_standby = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = closed.changed() => return Err(ReplicationError::LockLost),
            () = tokio::time::sleep(Duration::from_millis(config.standby_poll_ms)) => {}
        }
    }
    client
        .batch_execute(&format!(
            "LISTEN {}",
            ledger_wire::events::OUTBOX_NOTIFY_CHANNEL
        ))
        .await?;
    metrics.relay_active.set(1);
    let producer = kafka::producer(
        &config.brokers,
        &format!("ledger-relay-{}", config.region),
        config.linger_ms,
    )?;
    let (sent_tx, sent_rx) = mpsc::channel(config.relay_window);
    let mut marker = tokio::spawn(mark_published(client.clone(), sent_rx, metrics.clone()));
    let floor = settled_floor(&client, shutdown).await?;
    tracing::info!(%topic, floor, "relay active");
    let reader = Reader {
        client: &client,
        producer: &producer,
        topic,
        batch: config.relay_batch,
        metrics,
        cursor: 0,
        floor,
        holes: BTreeMap::new(),
    };
    let outcome = reader
        .run(
            sent_tx,
            &notify,
            (
                Duration::from_millis(config.relay_poll_ms),
                Duration::from_millis(config.relay_busy_poll_ms),
            ),
            &mut closed,
            &mut marker,
            shutdown,
        )
        .await;
    match outcome {
        Ok(Some(marked)) => marked,
        // The sender is gone now: the marker settles what is in flight and ends.
        Ok(None) => joined(marker.await),
        Err(error) => {
            // Rows sent but not marked go out again in the next session.
            marker.abort();
            Err(error)
        }
    }
}

/// The highest outbox id that is final before this session reads anything: the
/// sequence's value now, once every transaction running now has ended (bounded by the
/// writers' statement timeouts; given up after `HOLE_TTL`). Below it nothing can appear
/// later, so the first read needs no holes there; above it the usual hole tracking
/// applies.
///
/// Two rules make "below it nothing can appear later" true:
/// - The id is read *before* the snapshot, in a statement of its own. Writers take the
///   outbox id after their first write, so a writer holding an id up to the floor
///   already had a transaction id when the snapshot was taken, and the wait below
///   covers it. (Read in one statement, the snapshot came first: a writer that took its
///   transaction id and then its outbox id between the two was neither waited for nor
///   a hole, and its row was never published: 2 runs in 50 of the applier-kill test.)
/// - A sequence that has handed out nothing yet shows `last_value` 1 with `is_called`
///   false: its floor is 0, not 1 (or the first row of a fresh region, committed after
///   the second, was never read: an account opened on a fresh region that never
///   reached the others).
async fn settled_floor(
    client: &Client,
    shutdown: &CancellationToken,
) -> Result<i64, ReplicationError> {
    let floor: i64 = client
        .query_one(
            "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
             FROM ledger.outbox_id_seq",
            &[],
        )
        .await?
        .get(0);
    let snapshot: String = client
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    let deadline = Instant::now() + HOLE_TTL;
    loop {
        let settled: bool = client
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())
                        >= pg_snapshot_xmax($1::text::pg_snapshot)",
                &[&snapshot],
            )
            .await?
            .get(0);
        if settled {
            return Ok(floor);
        }
        if Instant::now() >= deadline {
            tracing::warn!("transactions older than the relay session still run; reading anyway");
            return Ok(floor);
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(floor),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

fn joined(
    result: Result<Result<(), ReplicationError>, tokio::task::JoinError>,
) -> Result<(), ReplicationError> {
    result.unwrap_or_else(|e| Err(ReplicationError::Config(format!("marker task: {e}"))))
}

struct Reader<'a> {
    client: &'a Client,
    producer: &'a Producer,
    topic: &'a str,
    batch: i64,
    metrics: &'a Metrics,
    cursor: i64,
    /// Ids up to here were final (committed or rolled back) before the first read.
    floor: i64,
    holes: BTreeMap<i64, Instant>,
}

impl Reader<'_> {
    async fn run(
        mut self,
        sent: mpsc::Sender<(i64, Delivery)>,
        notify: &Notify,
        (poll, busy_poll): (Duration, Duration),
        closed: &mut tokio::sync::watch::Receiver<bool>,
        marker: &mut JoinHandle<Result<(), ReplicationError>>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Result<(), ReplicationError>>, ReplicationError> {
        let sql = format!(
            "SELECT {} FROM ledger.outbox
             WHERE published_at IS NULL AND (id > $1 OR id = ANY($2))
             ORDER BY id LIMIT $3",
            OutboxRow::COLUMNS
        );
        let read = self.client.prepare(&sql).await?;
        let mut last_rows = Instant::now();
        loop {
            if *closed.borrow() {
                return Err(ReplicationError::LockLost);
            }
            self.forget_old_holes();
            let holes: Vec<i64> = self.holes.keys().copied().collect();
            let rows = self
                .client
                .query(&read, &[&self.cursor, &holes, &self.batch])
                .await?;
            self.metrics.relay_batch_events.observe(rows.len() as f64);
            let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= self.batch;
            for row in &rows {
                let row = OutboxRow::from_row(row)?;
                let id = row.id;
                self.advance(id);
                let delivery = self.send(row).await?;
                if sent.send((id, delivery)).await.is_err() {
                    // The marker ended, so it failed; its error is the one to report.
                    return Ok(None);
                }
            }
            if full {
                continue;
            }
            // While rows keep coming (and for a moment after), read again shortly without
            // waiting to be told; once quiet, sleep until a notification or the poll
            // fallback. The node rate-limits its notifications, so under a steady stream
            // they would come up to its interval late.
            if !rows.is_empty() {
                last_rows = Instant::now();
            }
            let wait = if last_rows.elapsed() < BUSY_WINDOW {
                busy_poll
            } else {
                poll
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = closed.changed() => return Err(ReplicationError::LockLost),
                marked = &mut *marker => return Ok(Some(joined(marked))),
            }
        }
    }

    /// Moves the cursor to `id`, remembering skipped ids as holes.
    fn advance(&mut self, id: i64) {
        if self.holes.remove(&id).is_some() || id <= self.cursor {
            return;
        }
        let now = Instant::now();
        for missing in (self.cursor.max(self.floor) + 1)..id {
            self.holes.insert(missing, now);
        }
        self.cursor = id;
        while self.holes.len() > MAX_HOLES {
            if let Some((oldest, _)) = self.holes.pop_first() {
                tracing::warn!(id = oldest, "relay forgets an outbox hole (too many holes)");
            }
        }
    }

    fn forget_old_holes(&mut self) {
        self.holes.retain(|_, seen| seen.elapsed() < HOLE_TTL);
    }

    /// Hands one row to the producer; waits while its queue is full.
    async fn send(&self, row: OutboxRow) -> Result<Delivery, ReplicationError> {
        let headers = row.headers();
        let envelope = row.into_envelope();
        let payload = serde_json::to_vec(&envelope)
            .map_err(|e| ReplicationError::Config(format!("encode envelope: {e}")))?;
        loop {
            let sent = self.producer.send(
                self.topic,
                Some(envelope.subject.as_bytes()),
                &payload,
                headers.clone(),
            );
            match sent {
                Ok(delivery) => return Ok(delivery),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    // The local queue drains as the broker acknowledges; back off briefly.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(error) => return Err(ReplicationError::Kafka(error)),
            }
        }
    }
}

/// Waits for each sent row's acknowledgement, in order, and marks acknowledged rows
/// published, many per statement. The first failed delivery ends the session.
async fn mark_published(
    client: Arc<Client>,
    mut sent: mpsc::Receiver<(i64, Delivery)>,
    metrics: Metrics,
) -> Result<(), ReplicationError> {
    let mark = client
        .prepare(
            "UPDATE ledger.outbox SET published_at = clock_timestamp()
             WHERE id = ANY($1) AND published_at IS NULL",
        )
        .await?;
    let mut batch = Vec::new();
    let mut ids = Vec::new();
    while sent.recv_many(&mut batch, 1_000).await > 0 {
        ids.clear();
        for (id, delivery) in batch.drain(..) {
            match delivery.acknowledged().await {
                Ok(()) => ids.push(id),
                Err(error) => {
                    mark_acknowledged(&client, &mark, &ids, &metrics).await?;
                    return Err(ReplicationError::Kafka(error));
                }
            }
        }
        mark_acknowledged(&client, &mark, &ids, &metrics).await?;
    }
    Ok(())
}

async fn mark_acknowledged(
    client: &Client,
    mark: &tokio_postgres::Statement,
    ids: &[i64],
    metrics: &Metrics,
) -> Result<(), ReplicationError> {
    if ids.is_empty() {
        return Ok(());
    }
    client.execute(mark, &[&ids]).await?;
    metrics.events_published.inc_by(ids.len() as u64);
    Ok(())
}
