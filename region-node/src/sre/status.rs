//! A region's status as the failover tool reads it (the parts that live in the
//! database: outbox backlog, replication lag, late events, money in flight).

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use ledger_wire::failover::{MoneyInFlight, NodeStatus, ReplicationLag};

use crate::store::StoreError;

/// The parts of [`NodeStatus`] that live in the database.
pub async fn status(
    pool: &Pool,
    region: &str,
    map_version: u64,
    lease_live: bool,
    slots_held: usize,
) -> Result<NodeStatus, StoreError> {
    let client = pool.get().await?;
    let outbox = client
        .query_one(
            "SELECT count(*), (extract(epoch FROM clock_timestamp() - min(created_at)) * 1000)::bigint
             FROM ledger.outbox WHERE published_at IS NULL",
            &[],
        )
        .await?;
    let replication = client
        .query(
            "SELECT origin_region, lag_events, lag_seconds,
                    (extract(epoch FROM clock_timestamp() - measured_at) * 1000)::bigint
             FROM ledger.replication_lag ORDER BY origin_region",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(ReplicationLag {
                origin: row.try_get(0)?,
                lag_events: row.try_get(1)?,
                lag_seconds: row.try_get(2)?,
                measured_ms_ago: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let late_events = client
        .query(
            "SELECT status, count(*) FROM ledger.late_events GROUP BY status",
            &[],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<BTreeMap<String, i64>, tokio_postgres::Error>>()?;
    let money_in_flight = money_in_flight(&client).await?;
    Ok(NodeStatus {
        region: region.to_owned(),
        map_version,
        lease_live,
        slots_held,
        outbox_unpublished: outbox.try_get(0)?,
        oldest_unpublished_ms: outbox.try_get(1)?,
        replication,
        late_events,
        money_in_flight,
        fence_delay_ms: None,
    })
}

/// Transfers debited in this region's ledger and not yet credited or refunded.
pub async fn money_in_flight(
    client: &deadpool_postgres::Client,
) -> Result<Vec<MoneyInFlight>, StoreError> {
    client
        .query(
            "SELECT currency, transfers, amount::text, oldest_seconds
             FROM ledger.money_in_flight() ORDER BY currency",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(MoneyInFlight {
                currency: row.try_get(0)?,
                transfers: row.try_get(1)?,
                amount: row.try_get(2)?,
                oldest_seconds: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(StoreError::from)
}
