//! Direct reads of a region's database, for asserting what the API cannot show.

use anyhow::Context;
use rust_decimal::Decimal;
use tokio_postgres::NoTls;

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Everything a refused request must leave untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSnapshot {
    pub accounts: i64,
    pub entries: i64,
    pub outbox: i64,
    pub transfers: i64,
    pub idempotency_keys: i64,
    pub balances: Decimal,
    pub seqs: i64,
}

pub async fn snapshot(db: &tokio_postgres::Client) -> anyhow::Result<LedgerSnapshot> {
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM ledger.accounts),
                    (SELECT count(*) FROM ledger.entries),
                    (SELECT count(*) FROM ledger.outbox),
                    (SELECT count(*) FROM ledger.transfers),
                    (SELECT count(*) FROM ledger.idempotency_keys),
                    (SELECT coalesce(sum(balance), 0) FROM ledger.accounts),
                    (SELECT coalesce(sum(seq), 0)::bigint FROM ledger.accounts)",
            &[],
        )
        .await
        .context("snapshot ledger")?;
    Ok(LedgerSnapshot {
        accounts: row.get(0),
        entries: row.get(1),
        outbox: row.get(2),
        transfers: row.get(3),
        idempotency_keys: row.get(4),
        balances: row.get(5),
        seqs: row.get(6),
    })
}

/// Problems with the ledger's bookkeeping, each as a sentence; empty when it balances:
/// every transaction's lines sum to zero, every account's lines sum to its balance,
/// seqs have no gaps, and every entry written here (not applied from another region)
/// has its outbox event.
pub async fn bookkeeping_violations(db: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    let checks: [(&str, &str); 4] = [
        (
            "transaction lines do not sum to zero",
            "SELECT txn_id::text FROM (
                 SELECT txn_id, amount FROM ledger.entries
                 UNION ALL SELECT txn_id, amount FROM ledger.external_postings) lines
             GROUP BY txn_id HAVING sum(amount) <> 0",
        ),
        (
            "account lines do not sum to the balance",
            "SELECT ledger.account_id_text(a.id) FROM ledger.accounts a
             LEFT JOIN ledger.entries e ON e.account_id = a.id
             GROUP BY a.id, a.balance HAVING coalesce(sum(e.amount), 0) <> a.balance",
        ),
        (
            "seq has gaps or does not match the entries",
            "SELECT ledger.account_id_text(a.id) FROM ledger.accounts a
             LEFT JOIN ledger.entries e ON e.account_id = a.id
             GROUP BY a.id, a.seq
             HAVING count(e.seq) <> a.seq OR coalesce(max(e.seq), 0) <> a.seq",
        ),
        (
            "entry without its outbox event",
            "SELECT ledger.account_id_text(e.account_id) || ' seq ' || e.seq FROM ledger.entries e
             WHERE e.applied_at IS NULL AND NOT EXISTS (SELECT 1 FROM ledger.outbox o
                               WHERE o.account_id = e.account_id AND o.seq = e.seq)",
        ),
    ];
    let mut violations = Vec::new();
    for (what, sql) in checks {
        for row in db
            .query(sql, &[])
            .await
            .with_context(|| format!("check: {what}"))?
        {
            violations.push(format!("{what}: {}", row.get::<_, String>(0)));
        }
    }
    Ok(violations)
}
