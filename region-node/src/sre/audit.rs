//! The audit snapshot a page at a time: a region's accounts with their entries, its
//! transfers, and its totals, for the failover tool's invariant checks. A page is
//! bounded (before, one document held every account and entry of the region).

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use ledger_wire::failover::{
    AuditAccount, AuditCursor, AuditEntry, AuditSnapshot, AuditTotal, AuditTransfer,
};
use ledger_wire::{AccountId, ProblemType};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::store::StoreError;

/// One page of what the invariant checks need from this region: up to `limit`
/// accounts after the cursor with all their entries, up to `limit` transfers after
/// the cursor, and the region's totals.
pub async fn audit(
    pool: &Pool,
    region: &str,
    after: &AuditCursor,
    limit: i64,
) -> Result<AuditSnapshot, StoreError> {
    let client = pool.get().await?;
    let after_account: i64 = match &after.account {
        Some(text) => text
            .parse::<AccountId>()
            .map_err(|e| StoreError::Rejected {
                kind: ProblemType::InvalidParameter,
                detail: format!("audit cursor: {e}"),
            })?
            .as_i64(),
        None => i64::MIN,
    };
    let after_transfer = after.transfer.unwrap_or(Uuid::nil());
    let account_limit = if after.accounts_done { 0 } else { limit };
    let transfer_limit = if after.transfers_done { 0 } else { limit };
    let accounts = client
        .query(
            "SELECT ledger.account_id_text(a.id), a.seq, a.epoch, a.balance::text,
                    EXISTS (SELECT 1 FROM ledger.entries e WHERE e.account_id = a.id AND e.review)
             FROM ledger.accounts a WHERE a.id > $1 ORDER BY a.id LIMIT $2",
            &[&after_account, &account_limit],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(AuditAccount {
                id: row.try_get(0)?,
                seq: row.try_get(1)?,
                epoch: row.try_get(2)?,
                balance: row.try_get(3)?,
                flagged: row.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let page_ids: Vec<String> = accounts
        .iter()
        .map(|a: &AuditAccount| a.id.clone())
        .collect();
    let entries = client
        .query(
            "SELECT ledger.account_id_text(account_id), seq, epoch, origin_region, event_id,
                    txn_id, kind, reconciles, transfer_id
             FROM ledger.entries
             WHERE account_id = ANY(SELECT ledger.account_id_value(unnest($1::text[])))
             ORDER BY account_id, seq",
            &[&page_ids],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                account: row.try_get(0)?,
                seq: row.try_get(1)?,
                epoch: row.try_get(2)?,
                origin: row.try_get(3)?,
                event_id: row.try_get(4)?,
                txn_id: row.try_get(5)?,
                kind: row.try_get(6)?,
                reconciles: row.try_get(7)?,
                transfer_id: row.try_get(8)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let transfers = client
        .query(
            "SELECT id, state FROM ledger.transfers WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after_transfer, &transfer_limit],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(AuditTransfer {
                id: row.try_get(0)?,
                state: row.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let mut totals: BTreeMap<String, (Decimal, Decimal, Decimal)> = BTreeMap::new();
    for row in client
        .query(
            "SELECT currency, sum(balance) FROM ledger.accounts GROUP BY currency",
            &[],
        )
        .await?
    {
        totals.entry(row.try_get(0)?).or_default().0 = row.try_get(1)?;
    }
    for row in client
        .query(
            "SELECT currency, -sum(amount) FROM ledger.external_postings GROUP BY currency",
            &[],
        )
        .await?
    {
        totals.entry(row.try_get(0)?).or_default().1 = row.try_get(1)?;
    }
    for row in client
        .query("SELECT currency, amount FROM ledger.money_in_flight()", &[])
        .await?
    {
        totals.entry(row.try_get(0)?).or_default().2 = row.try_get(1)?;
    }
    let late_pending: i64 = client
        .query_one(
            "SELECT count(*) FROM ledger.late_events WHERE status = 'pending'",
            &[],
        )
        .await?
        .try_get(0)?;
    Ok(AuditSnapshot {
        region: region.to_owned(),
        entries,
        totals: totals
            .into_iter()
            .map(|(currency, (balances, external, in_flight))| {
                let total = AuditTotal {
                    balances: balances.normalize().to_string(),
                    external_net: external.normalize().to_string(),
                    in_flight: in_flight.normalize().to_string(),
                };
                (currency, total)
            })
            .collect(),
        late_pending,
        next: next_cursor(after, &accounts, &transfers, limit),
        accounts,
        transfers,
    })
}

/// Where the page after this one starts, or `None` when both lists are exhausted.
fn next_cursor(
    after: &AuditCursor,
    accounts: &[AuditAccount],
    transfers: &[AuditTransfer],
    limit: i64,
) -> Option<AuditCursor> {
    let full = |n: usize| i64::try_from(n).is_ok_and(|n| n >= limit) && limit > 0;
    let next = AuditCursor {
        account: accounts
            .last()
            .map(|a| a.id.clone())
            .or(after.account.clone()),
        transfer: transfers.last().map(|t| t.id).or(after.transfer),
        accounts_done: after.accounts_done || !full(accounts.len()),
        transfers_done: after.transfers_done || !full(transfers.len()),
    };
    (!(next.accounts_done && next.transfers_done)).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> AuditAccount {
        AuditAccount {
            id: id.into(),
            seq: 1,
            epoch: 1,
            balance: "0".into(),
            flagged: false,
        }
    }

    #[test]
    fn paging_ends_when_both_lists_come_back_short() {
        let start = AuditCursor::default();
        let full = [account("a"), account("b")];
        let next = next_cursor(&start, &full, &[], 2).expect("accounts may go on");
        assert_eq!(next.account.as_deref(), Some("b"));
        assert!(next.transfers_done && !next.accounts_done);
        assert_eq!(next_cursor(&next, &[account("c")], &[], 2), None);
        // An empty page after a full one ends it too, keeping the cursor's place.
        assert_eq!(next_cursor(&next, &[], &[], 2), None);
    }
}
