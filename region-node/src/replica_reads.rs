//! Queries about copies of events and their freshness: which events a committed write
//! produced (to wait for their copies), whether this region holds a given event (asked
//! by a home waiting for `ack: replicated`), and how far behind a home this region's
//! copy is.

use std::time::Duration;

use ledger_wire::AccountId;
use uuid::Uuid;

use crate::store::{LedgerStore, StoreError};

/// One event a write produced at its home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub account: AccountId,
    pub seq: i64,
    pub event_id: Uuid,
}

/// How often a replica re-reads while a home waits for an event to arrive.
const PRESENCE_POLL: Duration = Duration::from_millis(5);

impl LedgerStore {
    /// The event of entry `(account, seq)`, or of the account's opening for seq 0.
    pub async fn event_of(
        &self,
        account: AccountId,
        seq: i64,
    ) -> Result<Option<EventRef>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT CASE WHEN $2::bigint = 0 THEN (SELECT opened_event_id FROM ledger.accounts WHERE id = $1)
                             ELSE (SELECT event_id FROM ledger.entries WHERE account_id = $1 AND seq = $2) END",
                &[&account.as_i64(), &seq],
            )
            .await?;
        Ok(row
            .and_then(|r| r.get::<_, Option<Uuid>>(0))
            .map(|event_id| EventRef {
                account,
                seq,
                event_id,
            }))
    }

    /// The events this region wrote for a transfer (debit, and credit when same-region).
    pub async fn transfer_events(
        &self,
        transfer: Uuid,
        region: &str,
    ) -> Result<Vec<EventRef>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT account_id, seq, event_id FROM ledger.entries
                 WHERE transfer_id = $1 AND origin_region = $2 AND event_id IS NOT NULL
                   AND applied_at IS NULL",
                &[&transfer, &region],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let account = AccountId::from_i64(r.try_get(0)?)
                    .map_err(|e| StoreError::Decode(e.to_string()))?;
                Ok(EventRef {
                    account,
                    seq: r.try_get(1)?,
                    event_id: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Whether this region holds the event applied (`ledger.holds_event`: a copy
    /// waiting behind a gap does not count), re-reading until `wait` has passed.
    pub async fn wait_for_event(
        &self,
        event: &EventRef,
        wait: Duration,
    ) -> Result<bool, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let client = self.pool().get().await?;
        let statement = client
            .prepare_cached("SELECT ledger.holds_event($1, $2, $3)")
            .await?;
        loop {
            let row = client
                .query_one(
                    &statement,
                    &[&event.account.as_i64(), &event.seq, &event.event_id],
                )
                .await?;
            if row.try_get::<_, bool>(0)? {
                return Ok(true);
            }
            if tokio::time::Instant::now() + PRESENCE_POLL > deadline {
                return Ok(false);
            }
            tokio::time::sleep(PRESENCE_POLL).await;
        }
    }

    /// How far behind `home` this region's copy may be, in ms: the applier's last
    /// reported lag, plus the report's age once it is older than a few seconds (an
    /// applier that stopped reporting may have stopped applying). `None`: no applier
    /// has ever reported for that region.
    pub async fn replica_lag_ms(&self, home: &str) -> Result<Option<u64>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT lag_seconds,
                        extract(epoch FROM clock_timestamp() - measured_at)::float8
                 FROM ledger.replication_lag WHERE origin_region = $1",
                &[&home],
            )
            .await?;
        Ok(row.map(|r| {
            let lag: f64 = r.get(0);
            let age: f64 = r.get(1);
            let stale = if age > 5.0 { age } else { 0.0 };
            ((lag + stale) * 1e3).max(0.0) as u64
        }))
    }
}
