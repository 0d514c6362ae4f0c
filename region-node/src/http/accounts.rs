//! Account routes: open an account, read it, deposit, withdraw, read its ledger.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use ledger_wire::api::{
    Account, AccountQuery, AmountRequest, CreateAccountRequest, Entry, Freshness, LedgerPage,
    LedgerQuery, ReadSource, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
};
use ledger_wire::{parse_amount, AccountId, Currency, Problem, ProblemType};
use rand::Rng;
use serde::Serialize;
use serde_json::value::RawValue;

use super::context::RequestContext;
use super::error::ApiError;
use super::extract::{self, IdempotencyKey, JsonBody, QueryParams};
use super::{check_reference, fingerprint, json_response, write_response, AppState};
use crate::store::{EntryKind, StoreError};

/// How often account creation draws a new random id after a collision.
const ID_ATTEMPTS: usize = 3;

#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts",
    params(("Idempotency-Key" = String, Header, description = "Unique per intended operation")),
    request_body = CreateAccountRequest,
    responses(
        (status = 201, description = "Account opened", body = Account),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown currency or region", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Region cannot open accounts now", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_account(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CreateAccountRequest>,
) -> Result<Response, ApiError> {
    let currency = Currency::parse(&request.currency).ok_or_else(|| {
        ApiError::new(
            ProblemType::UnknownCurrency,
            format!("currency {:?} is not supported", request.currency),
        )
    })?;
    if let Some(home) = request.home_region.as_deref() {
        if home != state.ownership.region() {
            return Err(ApiError::new(
                ProblemType::UnknownRegion,
                format!("region {home:?} is not part of this deployment"),
            ));
        }
    }
    let write = state.write_context(
        key,
        fingerprint(&("create_account", &request.currency, &request.home_region)),
        &ctx,
    );
    for _ in 0..ID_ATTEMPTS {
        let (id, epoch) = {
            let mut rng = rand::rng();
            let (slot, epoch) = state.ownership.pick_owned_slot(&mut rng).ok_or_else(|| {
                ApiError::new(ProblemType::NotOwner, "this region owns no slot right now")
            })?;
            let id = AccountId::new(slot, rng.random())
                .map_err(|e| ApiError::new(ProblemType::Internal, e.to_string()))?;
            (id, epoch)
        };
        match state
            .store
            .create_account(&write, id, currency.code, currency.scale, epoch)
            .await
        {
            Err(StoreError::AccountIdCollision) => continue,
            result => {
                let outcome = state.record_write("create_account", result)?;
                return Ok(write_response(outcome, state.ownership.region()));
            }
        }
    }
    Err(ApiError::new(
        ProblemType::Unavailable,
        "could not find a free account id; retry",
    ))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id"), AccountQuery),
    responses(
        (status = 200, description = "The account as this region sees it", body = Account),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account has not reached min_seq", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<AccountQuery>,
) -> Result<Response, ApiError> {
    let id = extract::account_id(&id, state.ownership.slot_count())?;
    let home = state
        .ownership
        .home_of(id)
        .ok_or_else(|| extract::not_found(id))?;
    let text = state
        .store
        .account(id)
        .await?
        .ok_or_else(|| extract::not_found(id))?;
    let mut account: Account = serde_json::from_str(&text)
        .map_err(|e| ApiError::from(StoreError::Decode(e.to_string())))?;
    if let Some(min_seq) = query.min_seq {
        if account.seq < min_seq {
            return Err(ApiError::new(
                ProblemType::SeqNotReached,
                format!("account {id} is at seq {}, below {min_seq}", account.seq),
            ));
        }
    }
    account.freshness = Some(Freshness {
        source: if home.is_local {
            ReadSource::Home
        } else {
            ReadSource::Replica
        },
        as_of: account.updated_at,
        lag_ms: 0,
    });
    Ok(json_response(200, &account, &home.region))
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/deposits", tag = "accounts",
    params(("id" = String, Path, description = "Account id"),
           ("Idempotency-Key" = String, Header, description = "Unique per intended operation")),
    request_body = AmountRequest,
    responses(
        (status = 201, description = "Deposit booked", body = Entry),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount not acceptable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn deposit(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<AmountRequest>,
) -> Result<Response, ApiError> {
    post_entry(&state, &ctx, EntryKind::Deposit, &id, key, request).await
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/withdrawals", tag = "accounts",
    params(("id" = String, Path, description = "Account id"),
           ("Idempotency-Key" = String, Header, description = "Unique per intended operation")),
    request_body = AmountRequest,
    responses(
        (status = 201, description = "Withdrawal booked", body = Entry),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Insufficient funds", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount not acceptable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn withdraw(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<AmountRequest>,
) -> Result<Response, ApiError> {
    post_entry(&state, &ctx, EntryKind::Withdrawal, &id, key, request).await
}

async fn post_entry(
    state: &AppState,
    ctx: &RequestContext,
    kind: EntryKind,
    id: &str,
    key: String,
    request: AmountRequest,
) -> Result<Response, ApiError> {
    let id = extract::account_id(id, state.ownership.slot_count())?;
    let amount = parse_amount(&request.amount)?;
    check_reference(request.reference.as_deref())?;
    let home = state
        .ownership
        .home_of(id)
        .ok_or_else(|| extract::not_found(id))?;
    let write = state.write_context(
        key,
        fingerprint(&(kind.as_str(), id, amount.normalize(), &request.reference)),
        ctx,
    );
    let result = state
        .store
        .post_entry(
            &write,
            kind,
            id,
            amount,
            request.reference.as_deref(),
            home.epoch,
        )
        .await;
    let outcome = state.record_write(kind.as_str(), result)?;
    Ok(write_response(outcome, &home.region))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/ledger", tag = "accounts",
    params(("id" = String, Path, description = "Account id"), LedgerQuery),
    responses(
        (status = 200, description = "One page of entries in seq order", body = LedgerPage),
        (status = 400, description = "Bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ledger_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<LedgerQuery>,
) -> Result<Response, ApiError> {
    let id = extract::account_id(&id, state.ownership.slot_count())?;
    let home = state
        .ownership
        .home_of(id)
        .ok_or_else(|| extract::not_found(id))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            format!("limit must be between 1 and {MAX_PAGE_LIMIT}"),
        ));
    }
    let after_seq = match query.cursor.as_deref() {
        None => 0,
        Some(cursor) => cursor
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| {
                ApiError::new(
                    ProblemType::InvalidParameter,
                    "cursor must be a next_cursor value",
                )
            })?,
    };
    let mut entries = state.store.ledger_page(id, after_seq, limit + 1).await?;
    // Only an empty page needs to tell "no such account" from "no more entries".
    if entries.is_empty() && state.store.account(id).await?.is_none() {
        return Err(extract::not_found(id));
    }
    let next_cursor = if entries.len() > limit as usize {
        entries.truncate(limit as usize);
        entries.last().map(|e| entry_seq(e).to_string())
    } else {
        None
    };
    #[derive(Serialize)]
    struct Page {
        account_id: AccountId,
        entries: Vec<Box<RawValue>>,
        next_cursor: Option<String>,
    }
    let page = Page {
        account_id: id,
        entries,
        next_cursor,
    };
    Ok(json_response(200, &page, &home.region))
}

fn entry_seq(entry: &RawValue) -> i64 {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: i64,
    }
    serde_json::from_str::<Seq>(entry.get()).map_or(0, |s| s.seq)
}
