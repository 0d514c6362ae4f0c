//! The cross-region transfer saga worker: takes every step that belongs to this region
//! (credit or refuse at the destination's home, refund at the source's home), as
//! `ledger.run_saga` decides from the leases recorded in the database. Woken by the
//! appliers (`NOTIFY ledger_saga` when they apply a debit or a rejection), with a
//! polling fallback, and after this region gains slots.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use ledger_wire::events::SAGA_NOTIFY_CHANNEL;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::passes::Passes;
use crate::NodeError;

/// Transfers looked at per pass; a full pass runs again at once.
const PASS_LIMIT: i32 = 200;

pub async fn run(
    pool: Pool,
    database: (tokio_postgres::Config, db_tls::DbTls),
    region: String,
    poll: Duration,
    outbox_written: Arc<Notify>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let woken = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(database, woken.clone(), shutdown.clone()));
    let passes = Passes {
        what: "transfer saga",
        limit: PASS_LIMIT as usize,
        poll,
        woken,
        outbox_written,
    };
    passes
        .run(&shutdown, || pass(&pool, &region, &metrics))
        .await;
    listener.abort();
    Ok(())
}

async fn pass(pool: &Pool, region: &str, metrics: &Metrics) -> Result<usize, NodeError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT transfer_id, step FROM ledger.run_saga($1, $2)",
            &[&region, &PASS_LIMIT],
        )
        .await?;
    let mut taken = 0;
    for row in &rows {
        let step: String = row.get(1);
        let transfer: uuid::Uuid = row.get(0);
        if let Some(error) = step.strip_prefix("failed: ") {
            tracing::warn!(%transfer, %error, "transfer saga step failed; retrying next pass");
            metrics.saga_step("failed");
        } else {
            let span = step_span(&client, transfer, &step).await;
            span.in_scope(|| tracing::info!(%transfer, %step, "transfer saga step"));
            metrics.saga_step(&step);
            taken += 1;
        }
    }
    Ok(taken)
}

/// A span for a step taken, in the trace of the request that started the transfer
/// (`ledger.transfers.traceparent`), when spans are exported: the credit or refund in
/// this region shows up in the same trace as the debit in the source's home.
async fn step_span(
    client: &deadpool_postgres::Object,
    transfer: uuid::Uuid,
    step: &str,
) -> tracing::Span {
    let make = || {
        tracing::info_span!(
            "saga",
            otel.name = %format!("transfer {step}"),
            ledger.transfer_id = %transfer,
            ledger.saga_step = %step,
        )
    };
    if !service_kit::telemetry::exporting() || step == "not_ours" {
        return tracing::Span::none();
    }
    let parent = client
        .query_opt(
            "SELECT traceparent FROM ledger.transfers WHERE id = $1",
            &[&transfer],
        )
        .await
        .ok()
        .flatten()
        .and_then(|row| row.get::<_, Option<String>>(0))
        .and_then(|header| ledger_wire::TraceParent::parse(&header));
    service_kit::telemetry::span_in_trace(parent.as_ref(), make).0
}

/// Keeps a LISTEN session open, reconnecting after failures, and wakes the worker on
/// each notification (and after each reconnect, in case one was missed).
async fn listen(
    (database, tls): (tokio_postgres::Config, db_tls::DbTls),
    woken: Arc<Notify>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match database.connect(tls.connector()).await {
            Ok((client, mut connection)) => {
                let wake = woken.clone();
                let mut driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(_) = message {
                            wake.notify_one();
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {SAGA_NOTIFY_CHANNEL}"))
                    .await
                    .is_ok()
                {
                    woken.notify_one();
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        _ = &mut driver => {}
                    }
                }
                driver.abort();
                drop(client);
            }
            Err(error) => tracing::debug!(%error, "saga listener cannot connect yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
