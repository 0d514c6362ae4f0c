//! The skeleton every routed write shares (deposits, withdrawals, transfers): route by
//! the account's home (forward, or write here at an epoch), write, and when the
//! database refuses as "not the owner" (this node's map was stale) read the map again
//! and route once more; record the outcome; for `ack: replicated`, wait until another
//! region holds the write's events; answer.

use std::future::Future;

use axum::response::Response;
use ledger_wire::{AccountId, ProblemType};

use super::accounts::{is_not_owner, write_route, Route};
use super::context::RequestContext;
use super::error::ApiError;
use super::forward::{self, forward, Ack, Onward};
use super::internal::Forwarded;
use super::{write_response, AppState};
use crate::replica_reads::EventRef;
use crate::store::{StoreError, WriteOutcome};

/// What a write handler passes on.
pub(super) struct WriteCall<'a> {
    pub state: &'a AppState,
    pub ctx: &'a RequestContext,
    pub forwarded: Option<&'a Forwarded>,
    pub ack: Ack,
    /// Metric and log name of the operation.
    pub operation: &'static str,
}

/// Runs one routed write of `account`: `onward` is the request forwarded to another
/// home, `write(epoch)` the write here, `events(outcome)` the events an `ack:
/// replicated` answer waits for.
pub(super) async fn routed_write<'o, W, WF, E, EF>(
    call: WriteCall<'_>,
    account: AccountId,
    onward: impl Fn() -> Onward<'o>,
    write: W,
    events: E,
) -> Result<Response, ApiError>
where
    W: Fn(i64) -> WF,
    WF: Future<Output = Result<WriteOutcome, StoreError>>,
    E: Fn(WriteOutcome) -> EF,
    EF: Future<Output = Result<Vec<EventRef>, ApiError>>,
{
    let state = call.state;
    for attempt in 0..2 {
        let epoch = match write_route(state, account, call.forwarded).await? {
            Route::Forward(region) => return forward(state, call.ctx, &region, onward()).await,
            Route::Here(epoch) => epoch,
        };
        let result = write(epoch).await;
        if attempt == 0 && is_not_owner(&result) && state.ownership.refresh().await {
            continue;
        }
        let outcome = state.record_write(call.operation, result)?;
        if call.ack == Ack::Replicated && outcome.status == 201 {
            let refs = events(outcome.clone()).await?;
            forward::await_replicated(state, call.ctx, refs).await?;
        }
        return Ok(write_response(outcome, state.ownership.region()));
    }
    Err(ApiError::new(
        ProblemType::NotOwner,
        "ownership is moving; retry shortly",
    ))
}
