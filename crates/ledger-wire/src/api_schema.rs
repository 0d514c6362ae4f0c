//! OpenAPI schemas of the public API's text fields and headers: every constraint the
//! server enforces on them, stated in the document (the id and amount patterns, the
//! currency codes, the Idempotency-Key's characters, the `ack` values), so that a
//! request valid by the document is not refused for its form. What no schema can state
//! (an amount's scale depends on the account's currency; a transfer needs two different
//! accounts; the deployment's region names are filled in by each node) is in the
//! descriptions.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::money::Currency;

fn text(pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([serde_json::json!(example)])
        .into()
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub struct IdempotencyKeyText;

impl PartialSchema for IdempotencyKeyText {
    fn schema() -> RefOr<Schema> {
        // No example: one key on different requests is refused (422
        // idempotency-key-reused), so a generated request must not reuse one.
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[!-~]{1,255}$"))
            .description(Some("Unique per intended operation: 1 to 255 visible ASCII characters. A retry with the same key and body gets the first answer; the same key with another body is refused (422 idempotency-key-reused)."))
            .into()
    }
}
impl ToSchema for IdempotencyKeyText {}

/// A transfer id: a hyphenated UUID. The pattern, not only `format: uuid` (which
/// OpenAPI 3.1 treats as an annotation), says what the server refuses with 400.
pub struct TransferIdText;

impl PartialSchema for TransferIdText {
    fn schema() -> RefOr<Schema> {
        text(
            "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
            "Transfer id (UUID)",
            "3f2a8c1e-5b7d-4e9a-8c21-0d4f6b9e1a73",
        )
    }
}
impl ToSchema for TransferIdText {}

/// A positive decimal amount as text.
pub struct AmountText;

impl PartialSchema for AmountText {
    fn schema() -> RefOr<Schema> {
        text(
            "^(0\\.([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9])|[1-9][0-9]{0,8}(\\.[0-9]{1,3})?)$",
            "Positive decimal, at most 999999999.999, plain digits with a dot: no sign, exponent or separators. At most the account's currency's decimals (2 for EUR, 0 for JPY, 3 for KWD); more are refused with 422 amount-scale.",
            "12.50",
        )
    }
}
impl ToSchema for AmountText {}

/// A supported ISO 4217 currency code.
pub struct CurrencyCode;

impl PartialSchema for CurrencyCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Currency::SUPPORTED.iter().map(|c| c.code)))
            .description(Some("ISO 4217 code of a supported currency"))
            .examples([serde_json::json!("EUR")])
            .into()
    }
}
impl ToSchema for CurrencyCode {}

/// A region name; each node's document lists the deployment's regions as its values.
pub struct RegionName;

impl PartialSchema for RegionName {
    fn schema() -> RefOr<Schema> {
        text(
            "^[a-z0-9-]{1,32}$",
            "A region of this deployment",
            "eu-west",
        )
    }
}
impl ToSchema for RegionName {}

/// Free text for the account holder.
pub struct ReferenceText;

impl PartialSchema for ReferenceText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(crate::api::MAX_REFERENCE_LEN))
            .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]*$"))
            .description(Some(
                "Free text for the account holder, at most 140 characters, no control characters",
            ))
            .into()
    }
}
impl ToSchema for ReferenceText {}

/// `ack`: when a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After the home's commit (the default).
    Local,
    /// Once another region holds a copy (504 replication-timeout if none does in time).
    Replicated,
}
