//! Transfer routes: move money between two accounts, read a transfer's state.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use ledger_wire::api::{CreateTransferRequest, Transfer};
use ledger_wire::{parse_amount, Problem, ProblemType};
use uuid::Uuid;

use super::context::RequestContext;
use super::error::ApiError;
use super::extract::{self, IdempotencyKey, JsonBody};
use super::{check_reference, fingerprint, write_response, AppState};

#[utoipa::path(
    post, path = "/v1/transfers", tag = "transfers",
    params(("Idempotency-Key" = String, Header, description = "Unique per intended operation")),
    request_body = CreateTransferRequest,
    responses(
        (status = 201, description = "Transfer booked (or saga started)", body = Transfer),
        (status = 404, description = "An account does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Insufficient funds", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount, currency or accounts not acceptable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_transfer(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CreateTransferRequest>,
) -> Result<Response, ApiError> {
    let amount = parse_amount(&request.amount)?;
    check_reference(request.reference.as_deref())?;
    if request.from == request.to {
        return Err(ApiError::new(
            ProblemType::SameAccountTransfer,
            "from and to name the same account",
        ));
    }
    let source = state
        .ownership
        .home_of(request.from)
        .ok_or_else(|| extract::not_found(request.from))?;
    let destination = state
        .ownership
        .home_of(request.to)
        .ok_or_else(|| extract::not_found(request.to))?;
    if !source.is_local || !destination.is_local {
        return Err(ApiError::new(
            ProblemType::NotOwner,
            "transfers between regions are not served by this node yet",
        ));
    }
    let write = state.write_context(
        key,
        fingerprint(&(
            "transfer",
            request.from,
            request.to,
            amount.normalize(),
            &request.reference,
        )),
        &ctx,
    );
    let result = state
        .store
        .post_transfer(
            &write,
            request.from,
            request.to,
            amount,
            request.reference.as_deref(),
            source.epoch,
            destination.epoch,
        )
        .await;
    let outcome = state.record_write("transfer", result)?;
    Ok(write_response(outcome, &source.region))
}

#[utoipa::path(
    get, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "Transfer id (UUID)")),
    responses(
        (status = 200, description = "The transfer and its saga state", body = Transfer),
        (status = 404, description = "No such transfer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_transfer(
    State(state): State<AppState>,
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
    let text = state.store.transfer(uuid).await?.ok_or_else(not_found)?;
    let transfer: Transfer = serde_json::from_str(&text)
        .map_err(|e| ApiError::from(crate::store::StoreError::Decode(e.to_string())))?;
    let home = state
        .ownership
        .home_of(transfer.from)
        .map_or_else(|| state.ownership.region().to_owned(), |h| h.region);
    Ok(super::json_response(200, &transfer, &home))
}
