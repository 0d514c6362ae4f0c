//! The promote exchange at a survivor, a page at a time: export what this region holds
//! of a dead region's recent events, import what another survivor exported.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use ledger_wire::failover::{ExchangedEvent, ExportCursor, ExportPage, ExportRequest};
use uuid::Uuid;

use crate::store::StoreError;

/// Largest page an exporter sends, whatever the caller asks.
pub const MAX_PAGE: u32 = 2_000;

/// One page of what this region holds of `request.origin`'s events applied in the last
/// `since_s` (or waiting for a gap), in the appliers' form.
pub async fn export_page(pool: &Pool, request: &ExportRequest) -> Result<ExportPage, StoreError> {
    let limit = request.limit.clamp(1, MAX_PAGE);
    let after = request.after.unwrap_or(ExportCursor {
        part: -1,
        account: i64::MIN,
        seq: i64::MIN,
        id: Uuid::nil(),
    });
    let since = Duration::from_secs(request.since_s);
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT ord, account, seq, id, event FROM ledger.export_events(
                 $1, make_interval(secs => $2), $3, $4, $5, $6, $7)",
            &[
                &request.origin,
                &since.as_secs_f64(),
                &after.part,
                &after.account,
                &after.seq,
                &after.id,
                &i32::try_from(limit).unwrap_or(i32::MAX),
            ],
        )
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in &rows {
        let event: serde_json::Value = row.try_get(4)?;
        events.push(
            serde_json::from_value::<ExchangedEvent>(event)
                .map_err(|e| StoreError::Decode(format!("exported event: {e}")))?,
        );
        last = Some(ExportCursor {
            part: row.try_get(0)?,
            account: row.try_get(1)?,
            seq: row.try_get(2)?,
            id: row.try_get(3)?,
        });
    }
    let full = u32::try_from(events.len()).is_ok_and(|n| n >= limit);
    Ok(ExportPage {
        events,
        next: if full { last } else { None },
    })
}

/// Applies events another region exported, by the usual rules (duplicates skip, gaps
/// wait, late events are kept); returns the count per outcome. An exported entry's
/// `event` does not repeat its data: it is put back here, since a late or pending copy
/// stores `event` and reconciliation reads the data from it.
pub async fn import(
    pool: &Pool,
    events: Vec<ExchangedEvent>,
) -> Result<BTreeMap<String, i64>, StoreError> {
    let events: Vec<ExchangedEvent> = events.into_iter().map(with_data_in_event).collect();
    let batch = serde_json::to_value(&events)
        .map_err(|e| StoreError::Decode(format!("encode imported events: {e}")))?;
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT outcome, count(*) FROM ledger.apply_events($1) GROUP BY outcome",
            &[&batch],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?)
}

fn with_data_in_event(mut event: ExchangedEvent) -> ExchangedEvent {
    match &mut event.event {
        serde_json::Value::Object(envelope) => {
            envelope.entry("data").or_insert_with(|| event.data.clone());
        }
        other => {
            *other = serde_json::json!({"data": event.data.clone(), "exported": true});
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(event: serde_json::Value) -> ExchangedEvent {
        ExchangedEvent {
            id: Uuid::nil(),
            kind: "Deposited".into(),
            account: 1,
            seq: 1,
            epoch: 1,
            origin: "a".into(),
            time: "2026-01-01T00:00:00Z".into(),
            data: serde_json::json!({"amount": "1.00"}),
            event,
        }
    }

    #[test]
    fn the_importer_puts_the_data_back_into_the_stored_event() {
        let back = with_data_in_event(exported(serde_json::json!({"exported": true})));
        assert_eq!(back.event["data"]["amount"], "1.00");
        assert_eq!(back.event["exported"], true);
        // A pending event's envelope, exported whole, keeps its own data.
        let whole = serde_json::json!({"data": {"amount": "9.00"}, "specversion": "1.0"});
        let kept = with_data_in_event(exported(whole.clone()));
        assert_eq!(kept.event, whole);
        let missing = with_data_in_event(exported(serde_json::Value::Null));
        assert_eq!(missing.event["data"]["amount"], "1.00");
    }
}
