//! Request extractors that answer bad input with problem documents instead of axum's
//! plain-text rejections.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use ledger_wire::{AccountId, AccountIdError, ProblemType, HEADER_IDEMPOTENCY_KEY};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Longest accepted Idempotency-Key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header every write must carry: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(HEADER_IDEMPOTENCY_KEY).ok_or_else(|| {
            ApiError::new(
                ProblemType::MissingIdempotencyKey,
                "every write needs an Idempotency-Key header, unique per intended operation",
            )
        })?;
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
            .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::new(
                    ProblemType::InvalidIdempotencyKey,
                    format!(
                        "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                    ),
                )
            })?;
        Ok(IdempotencyKey(key.to_owned()))
    }
}

/// A JSON request body; syntax errors are 400, schema errors 422, a wrong content type
/// 415 and an oversized body 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let kind = match &rejection {
        JsonRejection::JsonDataError(_) => ProblemType::InvalidBody,
        JsonRejection::JsonSyntaxError(_) => ProblemType::MalformedJson,
        JsonRejection::MissingJsonContentType(_) => ProblemType::UnsupportedMediaType,
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ProblemType::PayloadTooLarge,
        _ => ProblemType::MalformedJson,
    };
    ApiError::new(kind, rejection.body_text())
}

/// Query parameters; a malformed one is a 400 `invalid-parameter`.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::new(ProblemType::InvalidParameter, rejection.body_text())
            })
    }
}

/// Parses an account id from the path: malformed is 400, a slot outside the deployment
/// cannot exist and is 404.
pub fn account_id(text: &str, slot_count: u32) -> Result<AccountId, ApiError> {
    let id: AccountId = text.parse().map_err(|e: AccountIdError| match e {
        AccountIdError::Malformed => ApiError::new(ProblemType::InvalidParameter, e.to_string()),
        AccountIdError::SlotOutOfRange(_) => not_found(text),
    })?;
    if u32::from(id.slot()) >= slot_count {
        return Err(not_found(text));
    }
    Ok(id)
}

pub fn not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ProblemType::AccountNotFound,
        format!("account {id} does not exist"),
    )
}
