//! Database sessions of the relay and the appliers: dedicated connections (the relay's
//! holds its advisory lock and its LISTEN), with the node's session settings.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, Client};

use crate::ReplicationError;

/// A connection whose driver runs in a task of its own. `closed` turns true when the
/// session ends, so a holder of a session lock knows it no longer holds it.
pub struct Session {
    pub client: Client,
    pub closed: watch::Receiver<bool>,
}

/// Connects with fixed session settings; notifications on the session wake `notify`.
pub async fn connect(
    config: &crate::ReplicatorConfig,
    application: &str,
    notify: Option<std::sync::Arc<Notify>>,
) -> Result<Session, ReplicationError> {
    let tls = db_tls::DbTls::new(&config.database_tls)
        .map_err(|e| ReplicationError::Config(format!("database TLS: {e}")))?;
    let mut config: tokio_postgres::Config = config
        .database_url
        .parse()
        .map_err(|e| ReplicationError::Config(format!("database url: {e}")))?;
    tls.configure(&mut config);
    // Same reasons as the node's sessions (region-node/src/db.rs): UTC timestamps and a
    // fixed search_path; statements are bounded so a stuck query cannot stall a relay.
    config.options("-c statement_timeout=30000 -c TimeZone=UTC -c search_path=public");
    config.application_name(application);
    config.connect_timeout(Duration::from_secs(5));
    config.keepalives_idle(Duration::from_secs(5));
    let (client, mut connection) = config.connect(tls.connector()).await?;
    let (closed_tx, closed) = watch::channel(false);
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(notify) = &notify {
                        notify.notify_one();
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "database session ended");
                    break;
                }
            }
        }
        let _ = closed_tx.send(true);
    });
    // The relay and the appliers call the schema's functions: a database the region
    // node has not migrated to this build's schema yet is an error (the session is
    // started again a moment later), not a string of failed statements.
    ledger_schema::check_current(&client).await?;
    Ok(Session { client, closed })
}
