//! On a real PostgreSQL: after migration, the `ledger` schema's functions are exactly
//! the ones the function files declare, each with the files' body; migrating again (a
//! restart) changes nothing; and a function changed behind the files' back is found.

use std::collections::BTreeMap;

use harness::{PgCluster, PgOptions, WorkDir};
use tokio_postgres::NoTls;

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `name -> body` of every function in the `ledger` schema (one per name: the files
/// declare no overloads, and an overload left behind by a migration shows as a
/// second body).
async fn functions_in_database(
    db: &tokio_postgres::Client,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let rows = db
        .query(
            "SELECT p.proname, p.prosrc FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'ledger' ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        found.entry(row.get(0)).or_default().push(row.get(1));
    }
    Ok(found)
}

fn mismatches(
    declared: &[ledger_schema::DeclaredFunction],
    found: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for f in declared {
        match found.get(&f.name).map(Vec::as_slice) {
            Some([body]) if *body == f.body => {}
            Some([_]) => problems.push(format!("{} differs from {}", f.name, f.file)),
            Some(bodies) => problems.push(format!("{} has {} definitions", f.name, bodies.len())),
            None => problems.push(format!("{} of {} is missing", f.name, f.file)),
        }
    }
    for name in found.keys() {
        if !declared.iter().any(|f| &f.name == name) {
            problems.push(format!("{name} is in the database but in no file"));
        }
    }
    problems
}

#[tokio::test]
async fn functions_in_the_database_are_the_files() -> anyhow::Result<()> {
    let dir = WorkDir::temp("schema")?;
    let (_pg, url) =
        PgCluster::start_with_database(dir.path(), &PgOptions::default(), "ledger").await?;
    let mut db = connect(&url).await?;
    let applied = ledger_schema::migrate(&mut db).await?;
    assert_eq!(
        applied.len(),
        ledger_schema::SCHEMA_VERSION as usize,
        "every migration on a fresh database"
    );
    let declared = ledger_schema::declared_functions().map_err(anyhow::Error::msg)?;
    let found = functions_in_database(&db).await?;
    assert_eq!(mismatches(&declared, &found), Vec::<String>::new());
    assert_eq!(
        ledger_schema::applied_version(&db).await?,
        Some(ledger_schema::SCHEMA_VERSION)
    );

    // A restart: no migration runs again, the functions stay the files'.
    let again = ledger_schema::migrate(&mut db).await?;
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        mismatches(&declared, &functions_in_database(&db).await?),
        Vec::<String>::new()
    );

    // Planted: a function replaced behind the files' back, and one no file declares.
    db.batch_execute(
        "CREATE OR REPLACE FUNCTION ledger.ts_text(p_at timestamptz) RETURNS text
         LANGUAGE sql AS $$ SELECT 'planted' $$;
         CREATE FUNCTION ledger.stray() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    )
    .await?;
    let problems = mismatches(&declared, &functions_in_database(&db).await?);
    assert!(
        problems.iter().any(|p| p.starts_with("ts_text differs")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("stray is in the database")),
        "{problems:?}"
    );
    // Migrating puts the files' text back (the stray one stays: files only replace).
    ledger_schema::migrate(&mut db).await?;
    let problems = mismatches(&declared, &functions_in_database(&db).await?);
    assert_eq!(
        problems,
        vec!["stray is in the database but in no file".to_owned()]
    );
    Ok(())
}
