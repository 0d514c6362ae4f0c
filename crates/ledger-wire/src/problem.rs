//! RFC 9457 problem documents with the ledger's stable problem types.
//!
//! The `type` of every problem is `/problems/<slug>`; slugs never change meaning, so
//! clients may branch on them. docs/api.md lists them with what a client should do.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of every error answer.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

macro_rules! problem_types {
    ($($variant:ident => ($slug:literal, $status:literal, $title:literal),)*) => {
        /// Every problem the API can answer with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemType { $($variant,)* }

        impl ProblemType {
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$variant,)*];

            pub fn slug(self) -> &'static str {
                match self { $(ProblemType::$variant => $slug,)* }
            }

            pub fn status(self) -> u16 {
                match self { $(ProblemType::$variant => $status,)* }
            }

            pub fn title(self) -> &'static str {
                match self { $(ProblemType::$variant => $title,)* }
            }
        }
    };
}

problem_types! {
    MalformedJson => ("malformed-json", 400, "Request body is not valid JSON"),
    MissingIdempotencyKey => ("missing-idempotency-key", 400, "Idempotency-Key header is required"),
    InvalidIdempotencyKey => ("invalid-idempotency-key", 400, "Idempotency-Key header is not acceptable"),
    InvalidParameter => ("invalid-parameter", 400, "A query or path parameter is not acceptable"),
    AccountNotFound => ("account-not-found", 404, "Account not found"),
    TransferNotFound => ("transfer-not-found", 404, "Transfer not found"),
    NotFound => ("not-found", 404, "No such resource"),
    MethodNotAllowed => ("method-not-allowed", 405, "Method not allowed"),
    InsufficientFunds => ("insufficient-funds", 409, "Insufficient funds"),
    SeqNotReached => ("seq-not-reached", 409, "The account has not reached the requested seq"),
    PayloadTooLarge => ("payload-too-large", 413, "Request body is too large"),
    UnsupportedMediaType => ("unsupported-media-type", 415, "Request body must be application/json"),
    InvalidBody => ("invalid-body", 422, "Request body does not match the schema"),
    InvalidAmount => ("invalid-amount", 422, "Amount is not acceptable"),
    AccountClosed => ("account-closed", 422, "The account is closed"),
    AmountScale => ("amount-scale", 422, "Amount has more decimals than the currency allows"),
    AmountTooLarge => ("amount-too-large", 422, "Amount exceeds the per-operation maximum"),
    UnknownCurrency => ("unknown-currency", 422, "Currency is not supported"),
    CurrencyMismatch => ("currency-mismatch", 422, "Accounts hold different currencies"),
    SameAccountTransfer => ("same-account-transfer", 422, "A transfer needs two different accounts"),
    UnknownRegion => ("unknown-region", 422, "Region is not part of this deployment"),
    IdempotencyKeyReused => ("idempotency-key-reused", 422, "Idempotency-Key was used with a different request"),
    Unauthorized => ("unauthorized", 401, "Missing or invalid credentials"),
    Forbidden => ("forbidden", 403, "The API key lacks the scope this route needs"),
    RateLimited => ("rate-limited", 429, "Too many requests for this API key"),
    Internal => ("internal", 500, "Internal error"),
    HomeUnreachable => ("home-unreachable", 503, "The account's home region cannot be reached"),
    NotOwner => ("not-owner", 503, "This region does not hold the account's slot right now"),
    Unavailable => ("unavailable", 503, "Service temporarily unavailable"),
    ReplicationTimeout => ("replication-timeout", 504, "Committed at the home, but no other region confirmed a copy in time"),
}

impl ProblemType {
    /// The problem's `type` URI (a relative reference, per RFC 9457 section 3.1.1).
    pub fn uri(self) -> String {
        format!("/problems/{}", self.slug())
    }

    /// Finds the problem type a `type` URI names, for clients that branch on it.
    pub fn from_uri(uri: &str) -> Option<ProblemType> {
        let slug = uri.strip_prefix("/problems/")?;
        Self::ALL.iter().copied().find(|p| p.slug() == slug)
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            problem_type: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: detail.into(),
        }
    }

    pub fn kind(&self) -> Option<ProblemType> {
        ProblemType::from_uri(&self.problem_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_and_round_trip() {
        let mut slugs: Vec<_> = ProblemType::ALL.iter().map(|p| p.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemType::ALL.len());
        for kind in ProblemType::ALL {
            assert_eq!(ProblemType::from_uri(&kind.uri()), Some(*kind));
            assert!((400..600).contains(&kind.status()));
        }
    }
}
