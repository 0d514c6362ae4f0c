//! Wakes the outbox relay after writes commit: `pg_notify('ledger_outbox', '')` on the
//! region's database, at most one in flight, so a burst of writes costs one notification.
//!
//! Why not a trigger in the write transaction: a notifying transaction takes a
//! database-wide lock before commit and keeps it through its WAL flush, so all writes
//! would commit one at a time (see migrations/V2__replication.sql). The relay also polls,
//! so a notification lost here (database briefly unreachable) only delays it.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::NodeError;

/// Channel the relay listens on (the replication crate's `db::OUTBOX_CHANNEL`).
pub const OUTBOX_CHANNEL: &str = "ledger_outbox";

pub async fn run(
    pool: Pool,
    written: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = written.notified() => {}
        }
        let sent = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute("SELECT pg_notify($1, '')", &[&OUTBOX_CHANNEL])
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "could not notify the relay; it will poll");
        }
    }
}
