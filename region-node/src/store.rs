//! Typed access to the ledger functions and tables of the region's database.
//!
//! Every write is one call of a `ledger.*` function (crates/ledger-schema/sql/30_write_path.sql):
//! one round trip, one transaction, the lease check last before COMMIT on the
//! database's clock. Errors the functions raise for the API come back as
//! [`StoreError::Rejected`] with the problem type they name.

use std::sync::Arc;

use deadpool_postgres::{Pool, PoolError};
use ledger_wire::{AccountId, ProblemType};
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use uuid::Uuid;

/// The SQL of a deposit or withdrawal, exactly as the node sends it (the write-path
/// benchmark runs this text under pgbench).
pub const POST_ENTRY_SQL: &str =
    "SELECT status, body::text, replayed FROM ledger.post_entry($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const CREATE_ACCOUNT_SQL: &str =
    "SELECT status, body::text, replayed FROM ledger.create_account($1, $2, $3, $4, $5, $6, $7, $8)";
const POST_TRANSFER_SQL: &str = "SELECT status, body::text, replayed \
     FROM ledger.post_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const START_TRANSFER_SQL: &str = "SELECT status, body::text, replayed \
     FROM ledger.start_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const ACCOUNT_SQL: &str =
    "SELECT ledger.account_json(a)::text FROM ledger.accounts a WHERE a.id = $1";
const LEDGER_PAGE_SQL: &str = "SELECT ledger.entry_json(e)::text FROM ledger.entries e \
     WHERE e.account_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3";
const TRANSFER_SQL: &str =
    "SELECT ledger.transfer_json(t)::text FROM ledger.transfers t WHERE t.id = $1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database connection available: {0}")]
    Pool(#[from] PoolError),
    #[error("database error: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("{detail}")]
    Rejected { kind: ProblemType, detail: String },
    #[error("the chosen account id is already taken")]
    AccountIdCollision,
    #[error("database returned data the node cannot read: {0}")]
    Decode(String),
}

/// What a write answered: the HTTP status and JSON body to send, and whether it is the
/// stored answer of an earlier request with the same idempotency key.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub status: u16,
    pub body: String,
    pub replayed: bool,
}

/// Who writes, under which idempotency key and trace: common to every write.
#[derive(Debug, Clone)]
pub struct WriteContext {
    pub idempotency_key: String,
    pub fingerprint: Vec<u8>,
    pub region: String,
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Deposit,
    Withdrawal,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "deposit",
            EntryKind::Withdrawal => "withdrawal",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LedgerStore {
    pool: Pool,
    /// Woken after every committed write: the outbox notifier tells the relay.
    outbox_written: Arc<Notify>,
}

impl LedgerStore {
    pub fn new(pool: Pool, outbox_written: Arc<Notify>) -> Self {
        LedgerStore {
            pool,
            outbox_written,
        }
    }

    fn written(&self, outcome: WriteOutcome) -> WriteOutcome {
        if outcome.status == 201 && !outcome.replayed {
            self.outbox_written.notify_one();
        }
        outcome
    }

    /// Runs one write function (one statement, one transaction) and reads its answer.
    async fn write(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<WriteOutcome, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        let row = client
            .query_one(&statement, params)
            .await
            .map_err(classify)?;
        outcome(&row).map(|o| self.written(o))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub async fn create_account(
        &self,
        ctx: &WriteContext,
        id: AccountId,
        currency: &str,
        scale: u32,
        epoch: i64,
    ) -> Result<WriteOutcome, StoreError> {
        let scale = i16::try_from(scale).map_err(|_| StoreError::Decode("scale".into()))?;
        self.write(
            CREATE_ACCOUNT_SQL,
            &[
                &ctx.idempotency_key,
                &ctx.fingerprint,
                &id.as_i64(),
                &currency,
                &scale,
                &epoch,
                &ctx.region,
                &ctx.traceparent,
            ],
        )
        .await
    }

    pub async fn post_entry(
        &self,
        ctx: &WriteContext,
        kind: EntryKind,
        account: AccountId,
        amount: Decimal,
        reference: Option<&str>,
        epoch: i64,
    ) -> Result<WriteOutcome, StoreError> {
        self.write(
            POST_ENTRY_SQL,
            &[
                &ctx.idempotency_key,
                &ctx.fingerprint,
                &kind.as_str(),
                &account.as_i64(),
                &amount,
                &reference,
                &epoch,
                &ctx.region,
                &ctx.traceparent,
            ],
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn post_transfer(
        &self,
        ctx: &WriteContext,
        from: AccountId,
        to: AccountId,
        amount: Decimal,
        reference: Option<&str>,
        from_epoch: i64,
        to_epoch: i64,
    ) -> Result<WriteOutcome, StoreError> {
        self.write(
            POST_TRANSFER_SQL,
            &[
                &ctx.idempotency_key,
                &ctx.fingerprint,
                &from.as_i64(),
                &to.as_i64(),
                &amount,
                &reference,
                &from_epoch,
                &to_epoch,
                &ctx.region,
                &ctx.traceparent,
            ],
        )
        .await
    }

    /// Debits the source (homed here) and starts the saga that credits the destination
    /// at its own home.
    pub async fn start_transfer(
        &self,
        ctx: &WriteContext,
        from: AccountId,
        to: AccountId,
        amount: Decimal,
        reference: Option<&str>,
        from_epoch: i64,
    ) -> Result<WriteOutcome, StoreError> {
        self.write(
            START_TRANSFER_SQL,
            &[
                &ctx.idempotency_key,
                &ctx.fingerprint,
                &from.as_i64(),
                &to.as_i64(),
                &amount,
                &reference,
                &from_epoch,
                &ctx.region,
                &ctx.traceparent,
            ],
        )
        .await
    }

    /// The account's JSON as stored, or `None` when this region has no row for it.
    pub async fn account(&self, id: AccountId) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(ACCOUNT_SQL).await?;
        let row = client.query_opt(&statement, &[&id.as_i64()]).await?;
        row.map(|r| r.try_get::<_, String>(0).map_err(StoreError::from))
            .transpose()
    }

    /// Up to `limit` entries with seq above `after_seq`, in seq order.
    pub async fn ledger_page(
        &self,
        id: AccountId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Box<RawValue>>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(LEDGER_PAGE_SQL).await?;
        let rows = client
            .query(&statement, &[&id.as_i64(), &after_seq, &i64::from(limit)])
            .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get(0)?;
                RawValue::from_string(text).map_err(|e| StoreError::Decode(e.to_string()))
            })
            .collect()
    }

    pub async fn transfer(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(TRANSFER_SQL).await?;
        let row = client.query_opt(&statement, &[&id]).await?;
        row.map(|r| r.try_get::<_, String>(0).map_err(StoreError::from))
            .transpose()
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// The server's own words (SQLSTATE, message, detail), which `Display` of
/// `tokio_postgres::Error` leaves out.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!(
            "{} {}{}",
            db.code().code(),
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        // A connection failure says little by itself ("error performing TLS
        // handshake"); its sources say why (an unknown certificate issuer, say).
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

fn outcome(row: &tokio_postgres::Row) -> Result<WriteOutcome, StoreError> {
    let status: i32 = row.try_get(0)?;
    let body: String = row.try_get(1)?;
    let replayed: bool = row.try_get(2)?;
    let status =
        u16::try_from(status).map_err(|_| StoreError::Decode(format!("status {status}")))?;
    Ok(WriteOutcome {
        status,
        body,
        replayed,
    })
}

/// Turns the `LDnnn` errors the ledger functions raise into API rejections.
fn classify(error: tokio_postgres::Error) -> StoreError {
    let Some(db) = error.as_db_error() else {
        return StoreError::Database(error);
    };
    let code = db.code().code();
    if !code.starts_with("LD") {
        return StoreError::Database(error);
    }
    if db.message() == "account-id-collision" {
        return StoreError::AccountIdCollision;
    }
    let detail = db.detail().unwrap_or(db.message()).to_owned();
    match ProblemType::ALL.iter().find(|p| p.slug() == db.message()) {
        Some(kind) => StoreError::Rejected {
            kind: *kind,
            detail,
        },
        None => StoreError::Decode(format!("unknown ledger error {code} {}", db.message())),
    }
}
