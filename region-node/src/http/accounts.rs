//! Account routes: open an account, read it, deposit, withdraw, read its ledger.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use ledger_wire::api::{
    Account, AccountQuery, AmountRequest, Consistency, CreateAccountRequest, Entry, Freshness,
    LedgerPage, LedgerQuery, ReadSource, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
};
use ledger_wire::{parse_amount, AccountId, Currency, Problem, ProblemType};
use rand::Rng;
use serde::Serialize;
use serde_json::value::RawValue;

use super::context::RequestContext;
use super::error::ApiError;
use super::extract::{self, IdempotencyKey, JsonBody, QueryParams};
use super::forward::{self, forward, refuse_second_hop, Ack, Onward};
use super::internal::Forwarded;
use super::write::{routed_write, WriteCall};
use super::{check_reference, fingerprint, json_response, write_response, AppState};
use crate::home::{Refusal, WriteRoute};
use crate::store::{EntryKind, StoreError};

/// How often account creation draws a new random id after a collision.
const ID_ATTEMPTS: usize = 3;
/// How often a `min_seq` read looks at the local copy again.
const MIN_SEQ_POLL: Duration = Duration::from_millis(10);

#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts",
    params(("Idempotency-Key" = inline(ledger_wire::api_schema::IdempotencyKeyText), Header, description = "Unique per intended operation: 1 to 255 visible ASCII characters")),
    request_body = CreateAccountRequest,
    responses(
        (status = 201, description = "Account opened", body = Account),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown currency or region", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Region cannot open accounts now", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Request body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Request body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "ack: replicated: committed at the home, but no other region confirmed a copy in time", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_account(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    forwarded: Option<Extension<Forwarded>>,
    headers: HeaderMap,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<CreateAccountRequest>,
) -> Result<Response, ApiError> {
    let ack = Ack::from_headers(&headers)?;
    let currency = Currency::parse(&request.currency).ok_or_else(|| {
        ApiError::new(
            ProblemType::UnknownCurrency,
            format!("currency {:?} is not supported", request.currency),
        )
    })?;
    if let Some(home) = request.home_region.as_deref() {
        if !state.ownership.knows_region(home) {
            return Err(ApiError::new(
                ProblemType::UnknownRegion,
                format!("region {home:?} is not part of this deployment"),
            ));
        }
        if home != state.ownership.region() {
            refuse_second_hop(forwarded.as_deref(), home)?;
            let onward = Onward::write("/v1/accounts".into(), &key, ack, &request);
            return forward(&state, &ctx, home, onward).await;
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
                ApiError::new(
                    ProblemType::NotOwner,
                    "this region cannot open accounts right now (it holds no writable slot); \
                     retry, or name another home_region",
                )
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
                if ack == Ack::Replicated && outcome.status == 201 {
                    let opened = written_account(&outcome.body)?;
                    let events = state.store.event_of(opened, 0).await?;
                    forward::await_replicated(&state, &ctx, events.into_iter().collect()).await?;
                }
                return Ok(write_response(outcome, state.ownership.region()));
            }
        }
    }
    Err(ApiError::new(
        ProblemType::Unavailable,
        "could not find a free account id; retry",
    ))
}

/// The account id in a committed write's answer (`id` of an account, `account_id` of
/// an entry).
pub(super) fn written_account(body: &str) -> Result<AccountId, ApiError> {
    #[derive(serde::Deserialize)]
    struct Ids {
        id: Option<AccountId>,
        account_id: Option<AccountId>,
    }
    serde_json::from_str::<Ids>(body)
        .ok()
        .and_then(|ids| ids.account_id.or(ids.id))
        .ok_or_else(|| ApiError::from(StoreError::Decode("answer without an account id".into())))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = inline(ledger_wire::AccountId), Path, description = "Account id"), AccountQuery),
    responses(
        (status = 200, description = "The account as this region sees it", body = Account),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The account has not reached min_seq", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request: bad JSON, a missing or unacceptable Idempotency-Key, a bad id or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not answerable here now: the home is unreachable or not writable (retry, same Idempotency-Key for writes)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_account(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    forwarded: Option<Extension<Forwarded>>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<AccountQuery>,
) -> Result<Response, ApiError> {
    let id = extract::account_id(&id, state.ownership.slot_count())?;
    if query.min_seq.is_some_and(|n| n < 0) {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            "min_seq must be 0 or more",
        ));
    }
    let home = state
        .ownership
        .home_of(id)
        .ok_or_else(|| extract::not_found(id))?;
    let strong = query.consistency == Some(Consistency::Strong);
    let ask_home = |min_seq: Option<i64>| {
        let mut path = format!("/v1/accounts/{id}?consistency=strong");
        if let Some(n) = min_seq {
            path.push_str(&format!("&min_seq={n}"));
        }
        Onward::get(path)
    };
    if strong && !home.is_local {
        refuse_second_hop(forwarded.as_deref(), &home.region)?;
        return forward(&state, &ctx, &home.region, ask_home(query.min_seq)).await;
    }
    if strong && !state.ownership.serves_strong_reads(id) {
        return Err(ApiError::new(
            ProblemType::NotOwner,
            "this region is the account's home but cannot serve authoritative reads right now",
        ));
    }
    let mut account = read_account(&state, id).await?;
    if let Some(min_seq) = query.min_seq {
        let deadline = tokio::time::Instant::now() + state.settings.min_seq_wait;
        while account.as_ref().is_none_or(|a| a.seq < min_seq)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(MIN_SEQ_POLL).await;
            account = read_account(&state, id).await?;
        }
        if account.as_ref().is_none_or(|a| a.seq < min_seq) {
            if !home.is_local && forwarded.is_none() {
                return forward(&state, &ctx, &home.region, ask_home(Some(min_seq))).await;
            }
            let seq = account.as_ref().map_or(0, |a| a.seq);
            return Err(ApiError::new(
                ProblemType::SeqNotReached,
                format!("account {id} is at seq {seq}, below {min_seq}"),
            ));
        }
    }
    let mut account = account.ok_or_else(|| extract::not_found(id))?;
    let lag_ms = if home.is_local {
        Some(0)
    } else {
        state.store.replica_lag_ms(&home.region).await?
    };
    // Static single-region mode has no map of other regions: the row's home stands.
    if state.ownership.is_dynamic() {
        account.home_region.clone_from(&home.region);
    }
    account.freshness = Some(Freshness {
        source: if home.is_local {
            ReadSource::Home
        } else {
            ReadSource::Replica
        },
        as_of: account.updated_at,
        lag_ms,
    });
    Ok(json_response(200, &account, &home.region))
}

async fn read_account(state: &AppState, id: AccountId) -> Result<Option<Account>, ApiError> {
    let Some(text) = state.store.account(id).await? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ApiError::from(StoreError::Decode(e.to_string())))
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/deposits", tag = "accounts",
    params(("id" = inline(ledger_wire::AccountId), Path, description = "Account id"),
           ("Idempotency-Key" = inline(ledger_wire::api_schema::IdempotencyKeyText), Header, description = "Unique per intended operation: 1 to 255 visible ASCII characters")),
    request_body = AmountRequest,
    responses(
        (status = 201, description = "Deposit booked", body = Entry),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount not acceptable", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request: bad JSON, a missing or unacceptable Idempotency-Key, a bad id or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Request body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Request body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not answerable here now: the home is unreachable or not writable (retry, same Idempotency-Key for writes)", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "ack: replicated: committed at the home, but no other region confirmed a copy in time", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn deposit(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    forwarded: Option<Extension<Forwarded>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<AmountRequest>,
) -> Result<Response, ApiError> {
    let call = EntryCall {
        state: &state,
        ctx: &ctx,
        forwarded: forwarded.as_deref(),
        headers: &headers,
    };
    post_entry(call, EntryKind::Deposit, &id, key, request).await
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/withdrawals", tag = "accounts",
    params(("id" = inline(ledger_wire::AccountId), Path, description = "Account id"),
           ("Idempotency-Key" = inline(ledger_wire::api_schema::IdempotencyKeyText), Header, description = "Unique per intended operation: 1 to 255 visible ASCII characters"),
           ("ack" = inline(Option<ledger_wire::api_schema::AckMode>), Header, nullable = false, description = "local (default): answer after the home's commit; replicated: once another region holds a copy")),
    request_body = AmountRequest,
    responses(
        (status = 201, description = "Withdrawal booked", body = Entry),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Insufficient funds", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount not acceptable", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Home region unreachable or not writable now", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request: bad JSON, a missing or unacceptable Idempotency-Key, a bad id or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Request body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Request body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "ack: replicated: committed at the home, but no other region confirmed a copy in time", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn withdraw(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    forwarded: Option<Extension<Forwarded>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<AmountRequest>,
) -> Result<Response, ApiError> {
    let call = EntryCall {
        state: &state,
        ctx: &ctx,
        forwarded: forwarded.as_deref(),
        headers: &headers,
    };
    post_entry(call, EntryKind::Withdrawal, &id, key, request).await
}

/// What every write handler passes on.
struct EntryCall<'a> {
    state: &'a AppState,
    ctx: &'a RequestContext,
    forwarded: Option<&'a Forwarded>,
    headers: &'a HeaderMap,
}

async fn post_entry(
    call: EntryCall<'_>,
    kind: EntryKind,
    id: &str,
    key: String,
    request: AmountRequest,
) -> Result<Response, ApiError> {
    let state = call.state;
    let ack = Ack::from_headers(call.headers)?;
    let id = extract::account_id(id, state.ownership.slot_count())?;
    let amount = parse_amount(&request.amount)?;
    check_reference(request.reference.as_deref())?;
    let path = format!("/v1/accounts/{id}/{}s", kind.as_str());
    let write = WriteCall {
        state,
        ctx: call.ctx,
        forwarded: call.forwarded,
        ack,
        operation: kind.as_str(),
    };
    let context = || {
        state.write_context(
            key.clone(),
            fingerprint(&(kind.as_str(), id, amount.normalize(), &request.reference)),
            call.ctx,
        )
    };
    let (context, reference) = (&context, request.reference.as_deref());
    routed_write(
        write,
        id,
        || Onward::write(path.clone(), &key, ack, &request),
        |epoch| async move {
            state
                .store
                .post_entry(&context(), kind, id, amount, reference, epoch)
                .await
        },
        |outcome| async move {
            let seq = written_seq(&outcome.body)?;
            Ok(state.store.event_of(id, seq).await?.into_iter().collect())
        },
    )
    .await
}

/// Where a write for `id` goes: here at an epoch, or to another region.
pub(super) enum Route {
    Here(i64),
    Forward(String),
}

pub(super) async fn write_route(
    state: &AppState,
    id: AccountId,
    forwarded: Option<&Forwarded>,
) -> Result<Route, ApiError> {
    let mut route = state.ownership.route_write(id);
    // Home here by the map, but the lease does not grant it: the map may be stale (the
    // renewal already knows better). Read the map again and route once more.
    if matches!(route, Some(WriteRoute::Refused(Refusal::NotGranted)))
        && state.ownership.refresh().await
    {
        route = state.ownership.route_write(id);
    }
    match route {
        None => Err(extract::not_found(id)),
        Some(WriteRoute::Local { epoch }) => Ok(Route::Here(epoch)),
        Some(WriteRoute::Remote { region }) => {
            refuse_second_hop(forwarded, &region)?;
            Ok(Route::Forward(region))
        }
        Some(WriteRoute::Refused(refusal)) => {
            Err(ApiError::new(ProblemType::NotOwner, refusal.describe()))
        }
    }
}

pub(super) fn is_not_owner<T>(result: &Result<T, StoreError>) -> bool {
    matches!(
        result,
        Err(StoreError::Rejected {
            kind: ProblemType::NotOwner,
            ..
        })
    )
}

fn written_seq(body: &str) -> Result<i64, ApiError> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: i64,
    }
    serde_json::from_str::<Seq>(body)
        .map(|s| s.seq)
        .map_err(|e| ApiError::from(StoreError::Decode(e.to_string())))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/ledger", tag = "accounts",
    params(("id" = inline(ledger_wire::AccountId), Path, description = "Account id"), LedgerQuery),
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
