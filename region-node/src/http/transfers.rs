//! Transfer routes: move money between two accounts, read a transfer's state.
//!
//! Both accounts homed here: one transaction. Otherwise the saga of ARCHITECTURE.md: the
//! source's home debits and answers with state `debited`; the destination's home
//! credits (or refuses, and the source's home refunds) when its applier sees the debit.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use ledger_wire::api::{CreateTransferRequest, Transfer};
use ledger_wire::{parse_amount, Problem, ProblemType};
use uuid::Uuid;

use super::context::RequestContext;
use super::error::ApiError;
use super::extract::{self, IdempotencyKey, JsonBody};
use super::forward::{Ack, Onward};
use super::internal::Forwarded;
use super::write::{routed_write, WriteCall};
use super::{check_reference, fingerprint, AppState};
use crate::home::WriteRoute;
use crate::store::StoreError;

#[utoipa::path(
    post, path = "/v1/transfers", tag = "transfers",
    params(("Idempotency-Key" = inline(ledger_wire::api_schema::IdempotencyKeyText), Header, description = "Unique per intended operation: 1 to 255 visible ASCII characters"),
           ("ack" = inline(Option<ledger_wire::api_schema::AckMode>), Header, nullable = false, description = "local (default): answer after the home's commit; replicated: once another region holds a copy")),
    request_body = CreateTransferRequest,
    responses(
        (status = 201, description = "Transfer booked (state completed), or saga started (state debited)", body = Transfer),
        (status = 404, description = "An account does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Insufficient funds", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount, currency or accounts not acceptable", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Source's home unreachable or not writable now", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request: bad JSON, a missing or unacceptable Idempotency-Key, a bad id or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Request body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Request body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "ack: replicated: committed at the home, but no other region confirmed a copy in time", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_transfer(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    forwarded: Option<Extension<Forwarded>>,
    headers: HeaderMap,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CreateTransferRequest>,
) -> Result<Response, ApiError> {
    let ack = Ack::from_headers(&headers)?;
    let amount = parse_amount(&request.amount)?;
    check_reference(request.reference.as_deref())?;
    if request.from == request.to {
        return Err(ApiError::new(
            ProblemType::SameAccountTransfer,
            "from and to name the same account",
        ));
    }
    if !state.ownership.slot_exists(request.to) {
        return Err(extract::not_found(request.to));
    }
    let write = WriteCall {
        state: &state,
        ctx: &ctx,
        forwarded: forwarded.as_deref(),
        ack,
        operation: "transfer",
    };
    let context = || {
        state.write_context(
            key.clone(),
            fingerprint(&(
                "transfer",
                request.from,
                request.to,
                amount.normalize(),
                &request.reference,
            )),
            &ctx,
        )
    };
    let (state, context) = (&state, &context);
    let (from, to, reference) = (request.from, request.to, request.reference.as_deref());
    routed_write(
        write,
        from,
        || Onward::write("/v1/transfers".into(), &key, ack, &request),
        |from_epoch| async move {
            // Both homed here: one transaction; otherwise the saga starts with the debit.
            match state.ownership.route_write(to) {
                Some(WriteRoute::Local { epoch: to_epoch }) => {
                    state
                        .store
                        .post_transfer(
                            &context(),
                            from,
                            to,
                            amount,
                            reference,
                            from_epoch,
                            to_epoch,
                        )
                        .await
                }
                _ => {
                    state
                        .store
                        .start_transfer(&context(), from, to, amount, reference, from_epoch)
                        .await
                }
            }
        },
        |outcome| async move {
            let transfer: Transfer = serde_json::from_str(&outcome.body)
                .map_err(|e| ApiError::from(StoreError::Decode(e.to_string())))?;
            Ok(state
                .store
                .transfer_events(transfer.id, state.ownership.region())
                .await?)
        },
    )
    .await
}

#[utoipa::path(
    get, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = inline(ledger_wire::api_schema::TransferIdText), Path, description = "Transfer id (UUID)")),
    responses(
        (status = 200, description = "The transfer and its saga state", body = Transfer),
        (status = 404, description = "No such transfer", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request: bad JSON, a missing or unacceptable Idempotency-Key, a bad id or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not answerable here now: the home is unreachable or not writable (retry, same Idempotency-Key for writes)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_transfer(
    State(state): State<AppState>,
    forwarded: Option<Extension<Forwarded>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            ProblemType::TransferNotFound,
            format!("transfer {id} does not exist"),
        )
    };
    let uuid = Uuid::parse_str(&id)
        .map_err(|_| ApiError::new(ProblemType::InvalidParameter, "transfer id must be a UUID"))?;
    let Some(text) = state.store.transfer(uuid).await? else {
        // Not replicated here yet (or unknown): another region may know it.
        if forwarded.is_some() {
            return Err(not_found());
        }
        let path = format!("/v1/transfers/{uuid}");
        let found = state
            .peers
            .find(&path, state.settings.forward_timeout)
            .await
            .ok_or_else(not_found)?;
        let transfer: Transfer = serde_json::from_slice(&found.body)
            .map_err(|e| ApiError::from(StoreError::Decode(e.to_string())))?;
        return Ok(transfer_response(&state, &transfer));
    };
    let transfer: Transfer = serde_json::from_str(&text)
        .map_err(|e| ApiError::from(StoreError::Decode(e.to_string())))?;
    Ok(transfer_response(&state, &transfer))
}

fn transfer_response(state: &AppState, transfer: &Transfer) -> Response {
    let home = state
        .ownership
        .home_of(transfer.from)
        .map_or_else(|| state.ownership.region().to_owned(), |h| h.region);
    super::json_response(200, transfer, &home)
}
