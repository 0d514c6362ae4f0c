//! Late-event handoff: a pending late event is decided only by its account's current
//! owner, but it may have reached only regions that do not own the account (the owner
//! changed again after it arrived, or the owner never read it from a dead region's
//! broker). Without help it stayed pending for ever, and failback readiness waited on
//! it for ever. This task hands such events to the owner the map names, over the
//! signed internal API, until some region's decision settles the copy here. The same
//! loop refreshes the money-in-flight gauges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use ledger_wire::failover::{LateDecision, LateHandoff, LatePush};
use ledger_wire::AccountId;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::home::Ownership;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::store::StoreError;
use crate::NodeError;

/// A late event waits this long for the owner to receive it the normal way.
const HANDOFF_AFTER: Duration = Duration::from_secs(3);
/// A handed-off event still pending here is sent again after this long (the owner may
/// have changed, or the call may have failed).
const HANDOFF_RETRY: Duration = Duration::from_secs(10);
const HANDOFF_LIMIT: i32 = 500;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Handoff {
    pub pool: Pool,
    pub ownership: Arc<Ownership>,
    pub peers: Arc<Peers>,
    pub metrics: Metrics,
    pub poll: Duration,
}

impl Handoff {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), NodeError> {
        while !shutdown.is_cancelled() {
            if let Err(error) = self.pass(HANDOFF_AFTER, HANDOFF_RETRY).await {
                tracing::warn!(%error, "late-event handoff pass failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.poll) => {}
            }
        }
        Ok(())
    }

    /// Hands off pending late events older than `after` and not handed off within
    /// `retry` (an SRE's push: both zero); returns what it sent.
    pub async fn pass(&self, after: Duration, retry: Duration) -> Result<LatePush, StoreError> {
        let mut pushed = LatePush::default();
        let client = self.pool.get().await?;
        self.metrics
            .set_money_in_flight(&crate::sre::status::money_in_flight(&client).await?);
        let rows = client
            .query(
                "SELECT event_id, account_id, late FROM ledger.late_to_hand_off(
                     make_interval(secs => $1), make_interval(secs => $2), $3)",
                &[&after.as_secs_f64(), &retry.as_secs_f64(), &HANDOFF_LIMIT],
            )
            .await?;
        let mut by_owner: BTreeMap<String, Vec<(Uuid, serde_json::Value)>> = BTreeMap::new();
        for row in &rows {
            let account = AccountId::from_i64(row.try_get(1)?);
            let Some(home) = account.ok().and_then(|a| self.ownership.home_of(a)) else {
                continue;
            };
            // Ours: the reconciler decides it once the lease allows.
            if home.is_local {
                continue;
            }
            by_owner
                .entry(home.region)
                .or_default()
                .push((row.try_get(0)?, row.try_get(2)?));
        }
        for (owner, events) in by_owner {
            let ids: Vec<Uuid> = events.iter().map(|(id, _)| *id).collect();
            match self.send(&owner, events).await {
                Ok(decisions) => {
                    let decided: BTreeMap<Uuid, LateDecision> =
                        decisions.into_iter().map(|d| (d.event_id, d)).collect();
                    for id in &ids {
                        let d = decided.get(id);
                        client
                            .execute(
                                "SELECT ledger.note_handoff($1, $2, $3, $4, $5, $6)",
                                &[
                                    id,
                                    &owner,
                                    &d.map(|d| d.status.as_str()),
                                    &d.and_then(|d| d.detail.as_deref()),
                                    &d.and_then(|d| d.resolved_by.as_deref()),
                                    &d.and_then(|d| d.reconciled_seq),
                                ],
                            )
                            .await?;
                    }
                    tracing::info!(
                        to = %owner,
                        events = ids.len(),
                        already_decided = decided.len(),
                        "handed late events to their account's owner"
                    );
                    self.metrics.late_handed_off(&owner, "ok", ids.len());
                    *pushed.handed_off.entry(owner).or_default() += ids.len();
                    pushed.already_decided += decided.len();
                }
                Err(error) => {
                    tracing::warn!(to = %owner, events = ids.len(), %error,
                        "could not hand late events to their account's owner; will retry");
                    self.metrics.late_handed_off(&owner, "failed", ids.len());
                    pushed.failed.push(format!("{owner}: {error}"));
                }
            }
        }
        Ok(pushed)
    }

    async fn send(
        &self,
        owner: &str,
        events: Vec<(Uuid, serde_json::Value)>,
    ) -> Result<Vec<LateDecision>, String> {
        let body = LateHandoff {
            events: events.into_iter().map(|(_, e)| e).collect(),
        };
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let answer = self
            .peers
            .call(
                owner,
                Method::POST,
                ledger_wire::internal::failover::LATE_HANDOFF,
                vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                Bytes::from(body),
                CALL_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
        if answer.status != 200 {
            return Err(format!(
                "answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| format!("unreadable answer: {e}"))
    }
}

/// The receiving side: stores the events (each stays pending until this region, as
/// owner, decides it) and answers the decisions already made here.
pub async fn receive(pool: &Pool, handoff: LateHandoff) -> Result<Vec<LateDecision>, StoreError> {
    let client = pool.get().await?;
    let events = serde_json::Value::Array(handoff.events);
    let rows = client
        .query(
            "SELECT event_id, status, detail, resolved_by, reconciled_seq
             FROM ledger.receive_late($1)",
            &[&events],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            Ok(LateDecision {
                event_id: row.try_get(0)?,
                status: row.try_get(1)?,
                detail: row.try_get(2)?,
                resolved_by: row.try_get(3)?,
                reconciled_seq: row.try_get(4)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?)
}
