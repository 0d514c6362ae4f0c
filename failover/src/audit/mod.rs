//! Fetching the evidence the invariants are checked on (ARCHITECTURE.md): every
//! region's audit snapshot, page by page, and the ownership history. The invariants
//! themselves live in `ledger-checker`, shared with the `ledger-check` binary.

use std::time::Duration;

use ledger_wire::failover::{AuditCursor, AuditSnapshot};
use ledger_wire::internal::failover as paths;
use ledger_wire::ownership::ChangeRecord;

pub use ledger_checker::{
    check_invariants, converged, saga_converged, transfer_of_key, transfers_settled, txn_of_key,
    AckedWrite, Check, InvariantReport,
};

use crate::{Cluster, FailoverError};

/// Every region's audit snapshot (all must answer).
pub async fn snapshots(cluster: &Cluster) -> Result<Vec<AuditSnapshot>, FailoverError> {
    let asks = cluster.regions().map(|region| snapshot(cluster, region));
    futures::future::join_all(asks).await.into_iter().collect()
}

/// One region's whole audit snapshot, read a bounded page at a time.
pub async fn snapshot(cluster: &Cluster, region: &str) -> Result<AuditSnapshot, FailoverError> {
    snapshot_in_pages(cluster, region, None).await
}

/// [`snapshot`] with pages of `page` accounts and transfers (`None`: the node's default).
pub async fn snapshot_in_pages(
    cluster: &Cluster,
    region: &str,
    page: Option<u32>,
) -> Result<AuditSnapshot, FailoverError> {
    let mut whole: Option<AuditSnapshot> = None;
    let limit = page.map(|p| format!("limit={p}")).unwrap_or_default();
    let mut query = format!("?{limit}");
    loop {
        let page: AuditSnapshot = cluster
            .get(region, &format!("{}{query}", paths::AUDIT), PAGE_TIMEOUT)
            .await?;
        let next = page.next.clone();
        whole = Some(match whole {
            None => page,
            Some(mut so_far) => {
                so_far.accounts.extend(page.accounts);
                so_far.entries.extend(page.entries);
                so_far.transfers.extend(page.transfers);
                // Totals and late events of the last page: the most recent view.
                so_far.totals = page.totals;
                so_far.late_pending = page.late_pending;
                so_far
            }
        });
        match next {
            Some(cursor) => query = format!("{}&{limit}", audit_query(&cursor)),
            None => break,
        }
    }
    let mut whole = whole.ok_or_else(|| FailoverError::Invalid("no audit page".into()))?;
    whole.next = None;
    Ok(whole)
}

const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The query string of the audit page that starts at `cursor`.
fn audit_query(cursor: &AuditCursor) -> String {
    let mut query = format!(
        "?accounts_done={}&transfers_done={}",
        cursor.accounts_done, cursor.transfers_done
    );
    if let Some(account) = &cursor.account {
        query.push_str(&format!("&after_account={account}"));
    }
    if let Some(transfer) = cursor.transfer {
        query.push_str(&format!("&after_transfer={transfer}"));
    }
    query
}

/// The whole ownership history, page by page.
pub async fn history(cluster: &Cluster) -> Result<Vec<ChangeRecord>, FailoverError> {
    const PAGE: usize = 10_000;
    let mut all: Vec<ChangeRecord> = Vec::new();
    loop {
        let since = all.last().map_or(0, |c| c.version);
        let page = cluster.ownership.history(since, PAGE).await?;
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}
