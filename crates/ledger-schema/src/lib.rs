//! The region database's schema, in one place that every process using it depends on
//! (the node migrates; the replicator waits for it and calls its functions).
//!
//! Two kinds of SQL, kept apart on purpose:
//! - `migrations/V*.sql`: versioned DDL (tables, types, indexes), applied once each by
//!   refinery, never edited after release;
//! - `sql/NN_concern.sql`: the **current** text of every `ledger.*` function, grouped by
//!   concern, applied with `CREATE OR REPLACE` after the migrations on every start. A
//!   function has exactly one text, so the rule that runs is the one you read there
//!   (before, ten functions were restated whole in later migrations and the running
//!   one was wherever it was last replaced). A test checks `pg_proc` against the files.
//!
//! Changing a function's arguments or result type needs a `DROP FUNCTION` in a new
//! migration first (`CREATE OR REPLACE` cannot change them).

pub mod functions;

pub use functions::{declared_functions, restated, DeclaredFunction, FUNCTION_FILES};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key under which one process at a time migrates a database.
const MIGRATION_LOCK_KEY: i64 = 0x6c65_6467_6572_0001;

/// The newest migration version this build knows.
pub const SCHEMA_VERSION: i32 = 9;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("migration: {0}")]
    Migration(String),
    #[error("function file {file}: {source}")]
    Functions {
        file: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "schema version {found:?} is older than {expected}; \
         is a region node of this build migrating the database?"
    )]
    TooOld { found: Option<i32>, expected: i32 },
}

/// Brings the schema to this build: the versioned migrations, then every function file,
/// in one advisory-locked section so that processes starting together do not race.
/// Returns the versions applied now (empty when the DDL was current).
///
/// Sets the session's `search_path` to `public`: refinery's history table is named
/// unqualified, and the default `"$user", public` would put it in the `ledger` schema
/// when the role is also named `ledger` (a restart would then think nothing had run).
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<u32>, SchemaError> {
    client.batch_execute("SET search_path = public").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = migrate_locked(client).await;
    // Unlocked either way (the caller may keep using the session).
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn migrate_locked(client: &mut tokio_postgres::Client) -> Result<Vec<u32>, SchemaError> {
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| SchemaError::Migration(e.to_string()))?;
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "applied migration"
        );
    }
    let tx = client.transaction().await?;
    // As pg_dump does: a `LANGUAGE sql` body is otherwise checked at creation, and may
    // call a function of a later file.
    tx.batch_execute("SET LOCAL check_function_bodies = off")
        .await?;
    for (file, text) in FUNCTION_FILES {
        tx.batch_execute(text)
            .await
            .map_err(|source| SchemaError::Functions { file, source })?;
    }
    tx.commit().await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.version())
        .collect())
}

/// The newest migration version applied to the database, if any.
pub async fn applied_version(client: &tokio_postgres::Client) -> Result<Option<i32>, SchemaError> {
    let row = client
        .query_one(
            "SELECT to_regclass('public.refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT max(version) FROM public.refinery_schema_history",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Refuses a database that does not carry this build's schema yet: processes that
/// start beside the region node (which migrates) call it before using the schema's
/// functions. This is the replication crate's dependency on the schema made explicit.
pub async fn check_current(client: &tokio_postgres::Client) -> Result<(), SchemaError> {
    let found = applied_version(client).await?;
    if found.is_some_and(|v| v >= SCHEMA_VERSION) {
        return Ok(());
    }
    Err(SchemaError::TooOld {
        found,
        expected: SCHEMA_VERSION,
    })
}
