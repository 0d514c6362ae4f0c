//! An applier: reads one remote region's topic from that region's broker and applies
//! its events to this region's replica rows.
//!
//! One database transaction per batch: `ledger.apply_events` applies the batch by the
//! rules of ARCHITECTURE.md (`ledger.apply_events`, crates/ledger-schema/sql/40_apply.sql) and the same transaction stores the next
//! offset of each partition. The consumer is assigned its partitions at those stored
//! offsets, so the database, not the broker, says where to resume: a crash after the
//! commit replays nothing, a crash before it replays the whole batch. With
//! `--commit-offsets-to-broker`, offsets are also committed to the origin broker's group
//! after the database commit, for standard lag tooling (off by default: nothing here needs
//! them, and each is one more storage write on the origin's broker).
//!
//! Events that cannot be applied (not an envelope, an unknown version, data the rules
//! cannot read) go to this region's dead-letter topic with the error in headers before
//! the transaction commits; the applier then carries on.
//!
//! While its origin is quiet the applier stops fetching and only looks at the origin's
//! partition ends now and then ([`pacing`]).

mod offsets;
mod pacing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger_wire::events::{self, EventEnvelope};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::RemoteRegion;
use crate::dlq::{self, DeadLetter};
use crate::lag::{LagContext, LagTracker};
use crate::producer::Producer;
use crate::{db, kafka, Metrics, ReplicationError, ReplicatorConfig};
use pacing::{Pace, Pacing};

/// How often to look again for an origin topic that does not exist yet.
const TOPIC_POLL_INTERVAL: Duration = Duration::from_secs(1);
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle applier's ListOffsets request. Long: Tansu 0.6's storage loop stops for good
/// when a caller gives up on a request (`Storage(UnableToSend)`).
const ENDS_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on asking one partition's log start when a session starts.
const LOG_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the applier for `origin` until `shutdown`, starting a new session after any
/// failure (database or broker unreachable).
pub async fn run(
    config: Arc<ReplicatorConfig>,
    origin: RemoteRegion,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let what = format!("applier of {}", origin.name);
    let (config, origin, metrics, token) = (&*config, &origin, &metrics, &shutdown);
    crate::restart_sessions(&what, &shutdown, move || {
        session(config, origin, metrics, token)
    })
    .await;
    Ok(())
}

struct Applier<'a> {
    config: &'a ReplicatorConfig,
    origin: &'a RemoteRegion,
    topic: String,
    metrics: &'a Metrics,
    db: db::Session,
    consumer: Arc<StreamConsumer<LagContext>>,
    /// The topic's partitions (what pacing gives up and takes again).
    partitions: Vec<i32>,
    /// Made at the first dead letter: an idle producer costs a polling thread that
    /// wakes every 100 ms (measured: two thirds of an idle replicator's CPU).
    dlq: Option<Producer>,
    lag: LagTracker,
    pacing: Pacing,
}

async fn session(
    config: &ReplicatorConfig,
    origin: &RemoteRegion,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), ReplicationError> {
    let topic = events::events_topic(&origin.name);
    kafka::ensure_topics(
        &config.brokers,
        &[events::dlq_topic(&config.region)],
        config.topic_partitions,
    )
    .await?;
    let application = format!("ledger-applier/{}<-{}", config.region, origin.name);
    let db = db::connect(config, &application, None).await?;
    let group = format!("ledger-applier-{}", config.region);
    let lag = LagTracker::new(&topic, &origin.name, metrics.clone());
    let consumer = Arc::new(kafka::consumer_with(
        &origin.brokers,
        &group,
        LagContext(lag.clone()),
    )?);
    let Some(partitions) = wait_for_partitions(&consumer, &topic, shutdown).await? else {
        return Ok(());
    };
    let stored = db
        .client
        .query(
            "SELECT partition, next_offset FROM ledger.replication_positions
             WHERE origin_region = $1 AND topic = $2",
            &[&origin.name, &topic],
        )
        .await?;
    let stored: HashMap<i32, i64> = stored.iter().map(|r| (r.get(0), r.get(1))).collect();
    let stored = past_log_start(
        &consumer,
        &topic,
        &partitions,
        stored,
        &origin.name,
        metrics,
    )
    .await;
    consumer.assign(&at_positions(&topic, &partitions, &stored)?)?;
    lag.start_at(&stored);
    tracing::info!(origin = %origin.name, %topic, partitions = partitions.len(), "applier reading");
    let applier = Applier {
        config,
        origin,
        topic,
        metrics,
        db,
        consumer,
        partitions,
        dlq: None,
        lag,
        pacing: Pacing::new(
            Duration::from_millis(config.apply_idle_after_ms),
            Duration::from_millis(config.apply_idle_poll_ms),
            Instant::now(),
        ),
    };
    applier.run(shutdown).await
}

/// The topic's partitions, waiting (and saying so once) while the topic does not exist.
async fn wait_for_partitions(
    consumer: &Arc<StreamConsumer<LagContext>>,
    topic: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Vec<i32>>, ReplicationError> {
    let mut said = false;
    loop {
        let (consumer, name) = (consumer.clone(), topic.to_owned());
        let found = tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
            Ok::<_, ReplicationError>(
                metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == name && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect::<Vec<i32>>(),
            )
        })
        .await
        .map_err(|e| ReplicationError::Config(format!("metadata task: {e}")))?;
        match found {
            Ok(partitions) if !partitions.is_empty() => return Ok(Some(partitions)),
            Ok(_) if !said => {
                tracing::info!(%topic, "waiting for the origin's topic to exist");
                said = true;
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%topic, %error, "origin broker not answering yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(TOPIC_POLL_INTERVAL) => {}
        }
    }
}

/// The topic's partitions at the applier's next offsets (absent: nothing applied yet,
/// from the beginning): where a session starts and where an idle applier fetches again.
/// Positions below a partition's log start are events the origin's retention deleted
/// before this region applied them: an alarm (error log, `offsets_skipped_total`), never
/// a silent reset to the log start. A partition with no stored position is read from
/// offset 0, so a fresh region that starts after a retention pass raises it too. The
/// positions returned start at the log start where it is past them. A broker that cannot
/// say leaves the positions as they are (the message-past-offset check still holds).
async fn past_log_start(
    consumer: &Arc<StreamConsumer<LagContext>>,
    topic: &str,
    partitions: &[i32],
    mut stored: HashMap<i32, i64>,
    origin: &str,
    metrics: &Metrics,
) -> HashMap<i32, i64> {
    let starts = {
        let (consumer, topic, partitions) =
            (consumer.clone(), topic.to_owned(), partitions.to_vec());
        tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|p| {
                    consumer
                        .fetch_watermarks(&topic, *p, LOG_START_TIMEOUT)
                        .map(|(low, _)| (*p, low))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
    };
    let starts = match starts {
        Ok(Ok(starts)) => starts,
        Ok(Err(error)) => {
            tracing::debug!(%origin, %error, "could not read the origin's log starts");
            return stored;
        }
        Err(error) => {
            tracing::debug!(%origin, %error, "log start task failed");
            return stored;
        }
    };
    for (partition, start) in starts {
        let next = stored.get(&partition).copied().unwrap_or(0);
        if start > next {
            tracing::error!(
                %origin,
                %topic,
                partition,
                from = next,
                to = start,
                "events gone from the origin's topic before this region applied them \
                 (retention ran past this region's position); their accounts wait for the \
                 missing seqs until re-seeded from the origin's database"
            );
            metrics
                .offsets_skipped
                .with_label_values(&[origin])
                .inc_by(u64::try_from(start - next).unwrap_or(0));
            stored.insert(partition, start);
        }
    }
    stored
}

fn at_positions(
    topic: &str,
    partitions: &[i32],
    next: &HashMap<i32, i64>,
) -> Result<TopicPartitionList, KafkaError> {
    partition_list(topic, partitions, |partition| {
        next.get(&partition)
            .map_or(Offset::Beginning, |offset| Offset::Offset(*offset))
    })
}

fn partition_list(
    topic: &str,
    partitions: &[i32],
    offset_of: impl Fn(i32) -> Offset,
) -> Result<TopicPartitionList, KafkaError> {
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition_offset(topic, *partition, offset_of(*partition))?;
    }
    Ok(list)
}

/// One event of a batch: the database's input and the event id, or why it cannot be
/// applied.
type Decoded = Result<(Value, uuid::Uuid), String>;

impl Applier<'_> {
    async fn run(mut self, shutdown: &CancellationToken) -> Result<(), ReplicationError> {
        while let Some(batch) = self.next_batch(shutdown).await {
            if *self.db.closed.borrow() {
                return Err(ReplicationError::LockLost);
            }
            let span = batch_span(&self.topic, &batch);
            self.apply(&batch).instrument(span).await?;
        }
        Ok(())
    }

    /// Waits for one message, then takes whatever else is ready, up to the batch size.
    async fn next_batch(&mut self, shutdown: &CancellationToken) -> Option<Vec<OwnedMessage>> {
        let mut batch = Vec::new();
        while batch.is_empty() {
            let fetching_until = match self.pacing.pace() {
                Pace::Fetching { until } => until,
                Pace::Idle => {
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(self.pacing.idle_poll) => {}
                    }
                    let unread = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        unread = self.origin_has_unread() => unread,
                    };
                    if unread {
                        self.fetch_again();
                    }
                    continue;
                }
            };
            let idle = async {
                match fetching_until {
                    Some(until) => tokio::time::sleep_until(until.into()).await,
                    None => std::future::pending().await,
                }
            };
            let received = tokio::select! {
                () = shutdown.cancelled() => return None,
                () = idle => {
                    self.stop_fetching();
                    continue;
                }
                received = self.consumer.recv() => received,
            };
            match received {
                Ok(message) => batch.push(message.detach()),
                Err(error) => tracing::debug!(origin = %self.origin.name, %error, "consumer error"),
            }
        }
        self.pacing.message(Instant::now());
        while batch.len() < self.config.apply_batch {
            match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                _ => break,
            }
        }
        Some(batch)
    }

    /// Stops fetching (nothing arrived for a while) by giving up the partitions; a
    /// failure leaves it fetching.
    fn stop_fetching(&mut self) {
        match self.consumer.unassign() {
            Ok(()) => {
                tracing::debug!(origin = %self.origin.name, "nothing arrived lately: fetching stopped");
                self.pacing.went_idle();
                self.metrics
                    .applier_idle
                    .with_label_values(&[&self.origin.name])
                    .set(1);
            }
            Err(error) => {
                tracing::debug!(origin = %self.origin.name, %error, "could not stop fetching");
                self.pacing.message(Instant::now());
            }
        }
    }

    /// Fetches again from the applied positions. Assigned afresh rather than resumed:
    /// librdkafka resumes a paused partition at the last position handed to the
    /// application, which its event API (StreamConsumer's) never records, so a resume
    /// fetched the whole session's events again.
    fn fetch_again(&mut self) {
        let assigned = at_positions(&self.topic, &self.partitions, &self.lag.positions())
            .and_then(|assignment| self.consumer.assign(&assignment));
        if let Err(error) = assigned {
            // Still idle: the next look at the origin's ends tries again.
            tracing::warn!(origin = %self.origin.name, %error, "could not resume fetching");
            return;
        }
        tracing::debug!(origin = %self.origin.name, "events waiting at the origin: fetching again");
        self.pacing.woke(Instant::now());
        self.metrics
            .applier_idle
            .with_label_values(&[&self.origin.name])
            .set(0);
    }

    /// Whether the origin's partitions end past this applier's positions, from one
    /// ListOffsets request. A broker that cannot say counts as "yes": fetching is how
    /// the applier notices it is back, and an applier must never sit idle on events.
    async fn origin_has_unread(&self) -> bool {
        let Ok(latest) = partition_list(&self.topic, &self.partitions, |_| Offset::End) else {
            return true;
        };
        let consumer = self.consumer.clone();
        let answer =
            tokio::task::spawn_blocking(move || consumer.offsets_for_times(latest, ENDS_TIMEOUT))
                .await;
        let ends: HashMap<i32, i64> = match answer {
            Ok(Ok(list)) => {
                let elements = list.elements();
                if elements.len() < self.partitions.len()
                    || elements.iter().any(|e| e.error().is_err())
                {
                    return true;
                }
                elements
                    .iter()
                    .map(|e| match e.offset() {
                        Offset::Offset(end) => (e.partition(), end),
                        // No offset for "latest": the partition holds nothing.
                        _ => (e.partition(), 0),
                    })
                    .collect()
            }
            Ok(Err(error)) => {
                tracing::debug!(origin = %self.origin.name, %error, "could not read the origin's ends");
                return true;
            }
            Err(error) => {
                tracing::debug!(origin = %self.origin.name, %error, "ends task failed");
                return true;
            }
        };
        self.lag.observe_ends(&ends) > 0
    }

    fn decode(&self, message: &OwnedMessage) -> Decoded {
        let envelope = message
            .payload()
            .ok_or_else(|| "message has no payload".to_owned())
            .and_then(|bytes| EventEnvelope::decode(bytes).map_err(|e| e.to_string()));
        envelope.and_then(|envelope| {
            if envelope.originregion != self.origin.name {
                return Err(format!(
                    "event of region {} on region {}'s topic",
                    envelope.originregion, self.origin.name
                ));
            }
            let account = envelope.account().map_err(|e| e.to_string())?;
            let short = envelope.short_type().map_err(|e| e.to_string())?;
            Ok((
                crate::envelope::apply_input(&envelope, account, short),
                envelope.id,
            ))
        })
    }

    async fn apply(&mut self, batch: &[OwnedMessage]) -> Result<(), ReplicationError> {
        let started = Instant::now();
        let origin = self.origin.name.as_str();
        let decoded: Vec<Decoded> = batch.iter().map(|m| self.decode(m)).collect();
        let inputs: Vec<&Value> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().map(|(input, _)| input))
            .collect();
        let inputs = serde_json::to_value(inputs)
            .map_err(|e| ReplicationError::Config(format!("encode batch: {e}")))?;
        let mut dead: Vec<DeadLetter> = batch
            .iter()
            .zip(&decoded)
            .filter_map(|(m, d)| d.as_ref().err().map(|e| DeadLetter::of_message(m, e)))
            .collect();

        self.report_holes(batch);
        let tx = self.db.client.transaction().await?;
        let outcomes = tx
            .query(
                "SELECT event_id, origin, outcome, detail, event_time, released
                 FROM ledger.apply_events($1::jsonb)",
                &[&inputs],
            )
            .await?;
        let now = Utc::now();
        let mut newest: Option<DateTime<Utc>> = None;
        for row in &outcomes {
            let event_id: uuid::Uuid = row.get(0);
            let event_origin: Option<String> = row.get(1);
            let outcome: String = row.get(2);
            let detail: Option<String> = row.get(3);
            let event_time: Option<DateTime<Utc>> = row.get(4);
            let released: Option<Value> = row.get(5);
            let event_origin = event_origin.unwrap_or_else(|| origin.to_owned());
            self.metrics
                .events_applied
                .with_label_values(&[&event_origin, &outcome])
                .inc();
            tracing::debug!(%event_id, %event_origin, %outcome, ?detail, "event");
            if matches!(outcome.as_str(), "applied" | "superseded") {
                if let Some(at) = event_time {
                    let delay = (now - at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    self.metrics
                        .apply_delay_seconds
                        .with_label_values(&[&event_origin])
                        .observe(delay.max(0.0));
                    newest = newest.max(Some(at));
                }
            }
            if outcome == "poison" {
                let error = detail.unwrap_or_else(|| "refused by the apply rules".into());
                let letter = match released {
                    Some(event) => Some(DeadLetter::of_released(&event, &error)),
                    None => batch
                        .iter()
                        .zip(&decoded)
                        .find(|(_, d)| matches!(d, Ok((_, id)) if *id == event_id))
                        .map(|(m, _)| DeadLetter::of_message(m, &error)),
                };
                dead.extend(letter);
            }
        }
        let next = offsets::next_offsets(batch, &decoded);
        let (partitions, offsets, times): (Vec<i32>, Vec<i64>, Vec<Option<DateTime<Utc>>>) = next
            .iter()
            .fold(Default::default(), |mut acc, (p, (o, t))| {
                acc.0.push(*p);
                acc.1.push(*o);
                acc.2.push(*t);
                acc
            });
        tx.execute(
            "INSERT INTO ledger.replication_positions
                 (origin_region, topic, partition, next_offset, last_event_at, updated_at)
             SELECT $1, $2, p, o, t, clock_timestamp()
             FROM unnest($3::int[], $4::bigint[], $5::timestamptz[]) AS x(p, o, t)
             ON CONFLICT (origin_region, topic, partition) DO UPDATE
             SET next_offset = EXCLUDED.next_offset,
                 last_event_at = coalesce(EXCLUDED.last_event_at,
                                          ledger.replication_positions.last_event_at),
                 updated_at = EXCLUDED.updated_at",
            &[&origin, &self.topic, &partitions, &offsets, &times],
        )
        .await?;
        if !dead.is_empty() {
            let dlq = match self.dlq.take() {
                Some(producer) => producer,
                None => kafka::producer(
                    &self.config.brokers,
                    &format!("ledger-dlq-{}", self.config.region),
                    0,
                )?,
            };
            let sent = dlq::send(&dlq, &self.config.region, &dead).await;
            self.dlq = Some(dlq);
            sent?;
            self.metrics
                .dlq_events
                .with_label_values(&[origin])
                .inc_by(dead.len() as u64);
        }
        tx.commit().await?;

        self.lag.advance(&next, newest);
        if self.config.commit_offsets_to_broker {
            self.commit_to_broker(&next);
        }
        self.metrics
            .apply_batches
            .with_label_values(&[origin, "committed"])
            .inc();
        self.metrics
            .apply_batch_seconds
            .with_label_values(&[origin])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Alarms on offsets the batch went past unread (see [`offsets`]). The batch is still
    /// applied: the accounts whose events fell into the hole wait for their missing seqs
    /// (reported as waiting events), every other account goes on.
    fn report_holes(&self, batch: &[OwnedMessage]) {
        let read: Vec<(i32, i64)> = batch.iter().map(|m| (m.partition(), m.offset())).collect();
        for hole in offsets::skipped(&read, &self.lag.positions()) {
            tracing::error!(
                origin = %self.origin.name,
                topic = %self.topic,
                partition = hole.partition,
                from = hole.from,
                to = hole.to,
                "events gone from the origin's topic before this region applied them \
                 (retention or a broker that lost data); their accounts wait for the missing \
                 seqs until re-seeded from the origin's database"
            );
            self.metrics
                .offsets_skipped
                .with_label_values(&[&self.origin.name])
                .inc_by(u64::try_from(hole.to - hole.from).unwrap_or(0));
        }
    }

    /// Publishes positions to the origin broker's group, for standard tools; the
    /// database's copy is the one that counts, so a failure here is only logged.
    fn commit_to_broker(&self, next: &HashMap<i32, (i64, Option<DateTime<Utc>>)>) {
        let mut offsets = TopicPartitionList::new();
        for (partition, (offset, _)) in next {
            if offsets
                .add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
                .is_err()
            {
                return;
            }
        }
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(%error, "offset commit to the origin broker failed");
        }
    }
}

/// Most events one batch span links to (a link per event, as the messaging conventions
/// ask, but bounded: a backlog batch holds hundreds).
const MAX_LINKS: usize = 128;

/// The span of one applied batch ("{topic} process", a consumer span) linked to the
/// span of each event's writer, when spans are exported.
fn batch_span(topic: &str, batch: &[OwnedMessage]) -> tracing::Span {
    if !service_kit::telemetry::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "apply",
        otel.name = %format!("{topic} process"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %topic,
        messaging.batch.message_count = batch.len(),
    );
    let traces: Vec<ledger_wire::TraceParent> = batch
        .iter()
        .filter_map(|m| {
            use rdkafka::message::Headers;
            let headers = m.headers()?;
            let value = headers
                .iter()
                .find(|h| h.key == events::headers::TRACEPARENT)?
                .value?;
            ledger_wire::TraceParent::parse(std::str::from_utf8(value).ok()?)
        })
        .take(MAX_LINKS)
        .collect();
    service_kit::telemetry::link_all(&span, &traces);
    span
}
