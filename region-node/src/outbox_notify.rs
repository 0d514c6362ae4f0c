//! Wakes the outbox relay after writes commit: `pg_notify('ledger_outbox', '')` on the
//! region's database, at most one in flight and at most one per `min_interval`, so a
//! stream of writes costs a bounded number of notifications (the relay reads everything
//! committed when it wakes, so coalescing loses nothing, and while rows keep coming it
//! polls on its own). Each NOTIFY is expensive for the server: at one per write the node
//! lost a fifth of its throughput on 2 cores (write-path-bench ratio 0.63 against 0.80),
//! at one per 2 ms still 13%; the default 20 ms costs nothing measurable and delays only
//! the first event after a quiet spell.
//!
//! Why not a trigger in the write transaction: a notifying transaction takes a
//! database-wide lock before commit and keeps it through its WAL flush, so all writes
//! would commit one at a time (see crates/ledger-schema/migrations/V2__replication.sql). The relay also polls,
//! so a notification lost here (database briefly unreachable) only delays it.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use ledger_wire::events::OUTBOX_NOTIFY_CHANNEL;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::NodeError;

pub async fn run(
    pool: Pool,
    written: Arc<Notify>,
    min_interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    // The notification is a hint, so its transaction need not wait for a WAL flush of
    // its own (a NOTIFY takes a transaction id, so its commit would).
    let notify_sql = format!(
        "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify('{OUTBOX_NOTIFY_CHANNEL}', ''); COMMIT"
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(min_interval) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = written.notified() => {}
        }
        let sent = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .batch_execute(&notify_sql)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "could not notify the relay; it will poll");
        }
    }
}
