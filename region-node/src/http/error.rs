//! API errors, answered as RFC 9457 problem documents. Server-side failures are logged
//! here, once, where they become an answer.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ledger_wire::problem::PROBLEM_CONTENT_TYPE;
use ledger_wire::{AmountError, Problem, ProblemType};

use crate::store::StoreError;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug)]
pub struct ApiError {
    pub kind: ProblemType,
    pub detail: String,
}

impl ApiError {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        ApiError {
            kind,
            detail: detail.into(),
        }
    }
}

impl From<AmountError> for ApiError {
    fn from(error: AmountError) -> Self {
        let kind = match error {
            AmountError::Malformed | AmountError::NotPositive => ProblemType::InvalidAmount,
            AmountError::TooLarge => ProblemType::AmountTooLarge,
        };
        ApiError::new(kind, error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Rejected { kind, detail } => ApiError::new(kind, detail),
            StoreError::Pool(e) => {
                tracing::warn!(error = %e, "no database connection for request");
                ApiError::new(
                    ProblemType::Unavailable,
                    "the region's database is busy or unreachable",
                )
            }
            StoreError::Database(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "transient database failure");
                ApiError::new(
                    ProblemType::Unavailable,
                    "the region's database did not answer in time",
                )
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::new(ProblemType::Internal, "internal error; see the node's log")
            }
        }
    }
}

/// Failures a retry may cure: timeouts, cancelled statements, lost connections.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        Some(code) => {
            let code = code.code();
            // 57014 query_canceled (statement timeout), 57P01 admin shutdown,
            // 25P03 idle_in_transaction timeout, 40001/40P01 serialization/deadlock, 08xxx.
            matches!(code, "57014" | "57P01" | "25P03" | "40001" | "40P01")
                || code.starts_with("08")
        }
        None => error.is_closed(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&Problem::new(self.kind, self.detail))
    }
}

pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    response
}
