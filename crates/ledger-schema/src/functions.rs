//! The function files, embedded, and a reader of what they declare (name, argument
//! list, body), which the schema test compares with `pg_proc`.

/// Every function file, in the order applied.
pub const FUNCTION_FILES: &[(&str, &str)] = &[
    ("10_rendering.sql", include_str!("../sql/10_rendering.sql")),
    ("20_leases.sql", include_str!("../sql/20_leases.sql")),
    (
        "30_write_path.sql",
        include_str!("../sql/30_write_path.sql"),
    ),
    ("40_apply.sql", include_str!("../sql/40_apply.sql")),
    ("50_saga.sql", include_str!("../sql/50_saga.sql")),
    ("60_reconcile.sql", include_str!("../sql/60_reconcile.sql")),
    ("70_failover.sql", include_str!("../sql/70_failover.sql")),
];

const CREATE: &str = "CREATE OR REPLACE FUNCTION ledger.";

/// One `CREATE OR REPLACE FUNCTION ledger.<name>(...) ... AS $$<body>$$` of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredFunction {
    pub file: &'static str,
    pub name: String,
    /// The body between the dollar quotes, as PostgreSQL stores it (`pg_proc.prosrc`).
    pub body: String,
}

/// Every function the files declare, in file order. Function texts in these files
/// always quote their body with `$$` (checked: a declaration without one is an error).
pub fn declared_functions() -> Result<Vec<DeclaredFunction>, String> {
    let mut declared = Vec::new();
    for (file, text) in FUNCTION_FILES {
        let mut rest = *text;
        while let Some(at) = rest.find(CREATE) {
            let after = &rest[at + CREATE.len()..];
            let name_end = after
                .find('(')
                .ok_or_else(|| format!("{file}: a declaration without arguments"))?;
            let name = after[..name_end].trim().to_owned();
            let open = after
                .find("$$")
                .ok_or_else(|| format!("{file}: {name} has no $$ body"))?;
            let body_and_rest = &after[open + 2..];
            let close = body_and_rest
                .find("$$")
                .ok_or_else(|| format!("{file}: {name}'s body is not closed"))?;
            declared.push(DeclaredFunction {
                file,
                name,
                body: body_and_rest[..close].to_owned(),
            });
            rest = &body_and_rest[close + 2..];
        }
    }
    Ok(declared)
}

/// Names declared more than once (the rule "one current text per function").
pub fn restated(declared: &[DeclaredFunction]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut twice: Vec<String> = declared
        .iter()
        .filter(|f| !seen.insert(f.name.as_str()))
        .map(|f| f.name.clone())
        .collect();
    twice.dedup();
    twice
}

/// Whether a migration's text creates a function (functions belong in `sql/`).
pub fn creates_function(migration: &str) -> bool {
    let upper = migration.to_uppercase();
    upper.contains("CREATE FUNCTION") || upper.contains("CREATE OR REPLACE FUNCTION")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_function_has_one_text() {
        let declared = declared_functions().expect("read files");
        assert!(declared.len() > 40, "{} functions", declared.len());
        assert_eq!(restated(&declared), Vec::<String>::new());
    }

    #[test]
    fn a_restated_function_is_caught() {
        let mut declared = declared_functions().expect("read files");
        let mut copy = declared[3].clone();
        copy.file = "99_planted.sql";
        declared.push(copy);
        assert_eq!(restated(&declared), vec![declared[3].name.clone()]);
    }

    #[test]
    fn migrations_hold_no_function() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("read migrations") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read migration");
            assert!(
                !creates_function(&text),
                "{} creates a function: functions live in sql/",
                path.display()
            );
            checked += 1;
        }
        assert!(checked >= 7);
        assert!(creates_function("create function ledger.f() returns int"));
    }
}
