//! What an SRE does with dead letters (`failover dlq list|show|replay`): read this
//! region's DLQ topic from its start, say which letters an earlier replay settled, and
//! replay letters through the normal apply rules (`ledger.apply_events`) after a fix,
//! recording who replayed what in `ledger.dlq_replays`. A settled letter is never
//! replayed again; an event a replay applies is skipped as a duplicate by the rules if
//! it arrives once more, so a replay cannot apply anything twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger_wire::dlq::{
    DeadLetter, DeadLetterDetail, DeadLetters, LetterId, Replay, ReplayReport, ReplayRequest,
    ReplayResult,
};
use ledger_wire::events::{self, headers, EventEnvelope};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres::Client;

use crate::dlq::{self, DeadLetter as Letter};
use crate::{db, kafka, ReplicationError, ReplicatorConfig};

/// Bound on reading a DLQ topic to its end.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Every letter of `region`'s DLQ topic on `brokers`, oldest first per partition.
pub async fn read_topic(
    brokers: &str,
    region: &str,
) -> Result<Vec<OwnedMessage>, ReplicationError> {
    let (brokers, topic) = (brokers.to_owned(), events::dlq_topic(region));
    tokio::task::spawn_blocking(move || read_blocking(&brokers, &topic))
        .await
        .map_err(|e| ReplicationError::DeadLetters(format!("reader task: {e}")))?
}

fn reader(brokers: &str) -> Result<BaseConsumer, ReplicationError> {
    crate::kafka::client_config(brokers)
        .set("group.id", "ledger-dlq-admin")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(ReplicationError::Kafka)
}

/// Each partition's (low, high) watermark; no topic yet means no letters.
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<Vec<(i32, i64, i64)>, ReplicationError> {
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    if found.error().is_some() {
        return Ok(Vec::new());
    }
    found
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)?;
            Ok((p.id(), low, high))
        })
        .collect()
}

fn read_blocking(brokers: &str, topic: &str) -> Result<Vec<OwnedMessage>, ReplicationError> {
    let consumer = reader(brokers)?;
    let marks = watermarks(&consumer, topic)?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for &(partition, low, high) in &marks {
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            remaining.insert(partition, high);
        }
    }
    let mut letters = Vec::new();
    if remaining.is_empty() {
        return Ok(letters);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while !remaining.is_empty() {
        if Instant::now() >= deadline {
            return Err(ReplicationError::DeadLetters(format!(
                "could not read {topic} to its end within {} s",
                READ_TIMEOUT.as_secs()
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?.detach();
        if remaining
            .get(&message.partition())
            .is_some_and(|high| message.offset() + 1 >= *high)
        {
            remaining.remove(&message.partition());
        }
        letters.push(message);
    }
    letters.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(letters)
}

/// Letters in `region`'s DLQ topic not settled by a replay: the topic's size less the
/// settled replays (the `ledger_replication_dlq_waiting` gauge).
pub async fn count_waiting(
    config: &ReplicatorConfig,
    client: &Client,
) -> Result<i64, ReplicationError> {
    let (brokers, topic) = (config.brokers.clone(), events::dlq_topic(&config.region));
    let in_topic: i64 = tokio::task::spawn_blocking(move || {
        let consumer = reader(&brokers)?;
        Ok::<_, ReplicationError>(
            watermarks(&consumer, &topic)?
                .iter()
                .map(|(_, low, high)| high - low)
                .sum(),
        )
    })
    .await
    .map_err(|e| ReplicationError::DeadLetters(format!("watermark task: {e}")))??;
    let settled: i64 = client
        .query_one(
            "SELECT count(*) FROM ledger.dlq_replays WHERE outcome <> 'poison'",
            &[],
        )
        .await?
        .get(0);
    Ok((in_topic - settled).max(0))
}

fn header_text(message: &OwnedMessage, name: &str) -> Option<String> {
    message.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

fn id_of(message: &OwnedMessage) -> LetterId {
    LetterId {
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// A letter as listed, with its last replay.
fn describe(message: &OwnedMessage, replays: &HashMap<LetterId, Replay>) -> DeadLetter {
    let envelope = message
        .payload()
        .and_then(|bytes| serde_json::from_slice::<EventEnvelope>(bytes).ok());
    let source = header_text(message, headers::DLQ_TOPIC).map(|topic| {
        let partition = header_text(message, headers::DLQ_PARTITION).unwrap_or_default();
        let offset = header_text(message, headers::DLQ_OFFSET).unwrap_or_default();
        format!("{topic}[{partition}]@{offset}")
    });
    DeadLetter {
        id: id_of(message),
        at: message
            .timestamp()
            .to_millis()
            .and_then(DateTime::<Utc>::from_timestamp_millis),
        error: header_text(message, headers::DLQ_ERROR).unwrap_or_default(),
        source,
        event_id: envelope.as_ref().map(|e| e.id),
        event_type: envelope.as_ref().map(|e| e.event_type.clone()),
        account: envelope.as_ref().map(|e| e.subject.clone()),
        origin: envelope.as_ref().map(|e| e.originregion.clone()),
        replay: replays.get(&id_of(message)).cloned(),
    }
}

async fn replays(client: &Client) -> Result<HashMap<LetterId, Replay>, ReplicationError> {
    let rows = client
        .query(
            "SELECT dlq_partition, dlq_offset, outcome, detail, replayed_by, replayed_at, attempts
             FROM ledger.dlq_replays",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                LetterId {
                    partition: r.get(0),
                    offset: r.get(1),
                },
                Replay {
                    outcome: r.get(2),
                    detail: r.get(3),
                    by: r.get(4),
                    at: r.get(5),
                    attempts: r.get(6),
                },
            )
        })
        .collect())
}

async fn session(config: &ReplicatorConfig) -> Result<db::Session, ReplicationError> {
    db::connect(config, &format!("ledger-dlq-admin/{}", config.region), None).await
}

/// [`count_waiting`] on a session of its own: two watermark requests and one count,
/// not a read of the whole topic.
pub async fn waiting(config: &ReplicatorConfig) -> Result<i64, ReplicationError> {
    let db = session(config).await?;
    count_waiting(config, &db.client).await
}

pub async fn list(config: &ReplicatorConfig) -> Result<DeadLetters, ReplicationError> {
    let messages = read_topic(&config.brokers, &config.region).await?;
    let db = session(config).await?;
    let replays = replays(&db.client).await?;
    Ok(DeadLetters {
        region: config.region.clone(),
        letters: messages.iter().map(|m| describe(m, &replays)).collect(),
    })
}

pub async fn show(
    config: &ReplicatorConfig,
    id: LetterId,
) -> Result<Option<DeadLetterDetail>, ReplicationError> {
    let messages = read_topic(&config.brokers, &config.region).await?;
    let Some(message) = messages.iter().find(|m| id_of(m) == id) else {
        return Ok(None);
    };
    let db = session(config).await?;
    let replays = replays(&db.client).await?;
    Ok(Some(DeadLetterDetail {
        letter: describe(message, &replays),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        headers: message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default(),
        payload: String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
    }))
}

/// The apply rules' input for a letter, or why this version cannot read it.
fn apply_input(
    config: &ReplicatorConfig,
    message: &OwnedMessage,
) -> Result<(serde_json::Value, uuid::Uuid), String> {
    let envelope =
        EventEnvelope::decode(message.payload().unwrap_or_default()).map_err(|e| e.to_string())?;
    if envelope.originregion == config.region {
        return Err(format!(
            "an event of this region ({}) cannot be applied here",
            config.region
        ));
    }
    let account = envelope.account().map_err(|e| e.to_string())?;
    let short = envelope.short_type().map_err(|e| e.to_string())?;
    Ok((
        crate::envelope::apply_input(&envelope, account, short),
        envelope.id,
    ))
}

pub async fn replay(
    config: &ReplicatorConfig,
    request: &ReplayRequest,
) -> Result<ReplayReport, ReplicationError> {
    let messages = read_topic(&config.brokers, &config.region).await?;
    let mut db = session(config).await?;
    let settled = replays(&db.client).await?;
    let chosen: Vec<Result<&OwnedMessage, LetterId>> = if request.letters.is_empty() {
        messages
            .iter()
            .filter(|m| !settled.get(&id_of(m)).is_some_and(Replay::settled))
            .map(Ok)
            .collect()
    } else {
        request
            .letters
            .iter()
            .map(|id| messages.iter().find(|m| id_of(m) == *id).ok_or(*id))
            .collect()
    };
    let mut results = Vec::with_capacity(chosen.len());
    for choice in chosen {
        let message = match choice {
            Ok(message) => message,
            Err(id) => {
                results.push(ReplayResult {
                    id,
                    event_id: None,
                    outcome: "unknown".into(),
                    detail: Some(format!(
                        "no letter {id} in {}",
                        events::dlq_topic(&config.region)
                    )),
                });
                continue;
            }
        };
        let id = id_of(message);
        if let Some(done) = settled.get(&id).filter(|r| r.settled()) {
            results.push(ReplayResult {
                id,
                event_id: None,
                outcome: "already".into(),
                detail: Some(format!("{} by {} at {}", done.outcome, done.by, done.at)),
            });
            continue;
        }
        results.push(replay_one(config, &mut db.client, message, &request.by).await?);
    }
    Ok(ReplayReport {
        region: config.region.clone(),
        results,
    })
}

/// One letter through the apply rules in one transaction with its replay record; events
/// it releases from waiting that turn out poison are dead-lettered again.
async fn replay_one(
    config: &ReplicatorConfig,
    client: &mut Client,
    message: &OwnedMessage,
    by: &str,
) -> Result<ReplayResult, ReplicationError> {
    let id = id_of(message);
    let tx = client.transaction().await?;
    let (event_id, outcome, detail, released_poison) = match apply_input(config, message) {
        Err(why) => (None, "poison".to_owned(), Some(why), Vec::new()),
        Ok((input, event_id)) => {
            let rows = tx
                .query(
                    "SELECT event_id, outcome, detail, released FROM ledger.apply_events($1::jsonb)",
                    &[&serde_json::Value::Array(vec![input])],
                )
                .await?;
            let mut outcome = (
                "poison".to_owned(),
                Some("the apply rules gave no outcome".to_owned()),
            );
            let mut released_poison = Vec::new();
            for row in &rows {
                let (row_event, row_outcome, row_detail): (uuid::Uuid, String, Option<String>) =
                    (row.get(0), row.get(1), row.get(2));
                let released: Option<serde_json::Value> = row.get(3);
                match released {
                    None if row_event == event_id => outcome = (row_outcome, row_detail),
                    Some(event) if row_outcome == "poison" => {
                        released_poison.push(Letter::of_released(
                            &event,
                            row_detail
                                .as_deref()
                                .unwrap_or("refused by the apply rules"),
                        ))
                    }
                    _ => {}
                }
            }
            (Some(event_id), outcome.0, outcome.1, released_poison)
        }
    };
    tx.execute(
        "INSERT INTO ledger.dlq_replays (dlq_partition, dlq_offset, event_id, outcome, detail,
                                         replayed_by, replayed_at)
         VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())
         ON CONFLICT (dlq_partition, dlq_offset) DO UPDATE
         SET event_id = EXCLUDED.event_id, outcome = EXCLUDED.outcome, detail = EXCLUDED.detail,
             replayed_by = EXCLUDED.replayed_by, replayed_at = EXCLUDED.replayed_at,
             attempts = ledger.dlq_replays.attempts + 1",
        &[&id.partition, &id.offset, &event_id, &outcome, &detail, &by],
    )
    .await?;
    if !released_poison.is_empty() {
        let producer = kafka::producer(
            &config.brokers,
            &format!("ledger-dlq-replay-{}", config.region),
            0,
        )?;
        dlq::send(&producer, &config.region, &released_poison).await?;
    }
    tx.commit().await?;
    tracing::info!(letter = %id, ?event_id, %outcome, ?detail, %by, "replayed a dead letter");
    Ok(ReplayResult {
        id,
        event_id,
        outcome,
        detail,
    })
}
