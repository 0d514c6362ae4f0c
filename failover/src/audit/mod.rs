//! The invariants of ARCHITECTURE.md, checked on every region's database (through each
//! node's audit snapshot) against the ownership history and, in a drill, against the
//! writes the workload saw acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ledger_wire::failover::{AuditCursor, AuditEntry, AuditSnapshot};
use ledger_wire::internal::failover as paths;
use ledger_wire::ownership::{ChangeRecord, Target};
use ledger_wire::AccountId;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Cluster, FailoverError};

mod transfers;
pub use transfers::{saga_converged, transfer_of_key, transfers_settled};

/// How many examples of a violation a check keeps.
const EXAMPLES: usize = 5;

/// A write the client saw acknowledged (201).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckedWrite {
    pub account: String,
    /// The deposit's or withdrawal's txn id; for a transfer, the transfer's id.
    pub txn_id: Uuid,
    pub seq: i64,
    /// The epoch of the entry the acknowledgement named (with `seq`), when known.
    #[serde(default)]
    pub epoch: Option<i64>,
    pub replicated: bool,
    /// A transfer (its source is `account`) rather than a deposit or withdrawal.
    #[serde(default)]
    pub transfer: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub summary: String,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvariantReport {
    pub regions: Vec<String>,
    pub checks: Vec<Check>,
}

impl InvariantReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }
}

fn check(name: &str, problems: Vec<String>, fine: String) -> Check {
    Check {
        name: name.to_owned(),
        ok: problems.is_empty(),
        summary: if problems.is_empty() {
            fine
        } else {
            format!("{} violation(s)", problems.len())
        },
        examples: problems.into_iter().take(EXAMPLES).collect(),
    }
}

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

/// Checks the invariants over `snapshots`, given the ownership history, the
/// acknowledged writes and the ids of every transfer a client asked for (both empty
/// outside drills; an empty `sent_transfers` skips that part of the check).
pub fn check_invariants(
    snapshots: &[AuditSnapshot],
    history: &[ChangeRecord],
    acked: &[AckedWrite],
    sent_transfers: &HashSet<Uuid>,
) -> InvariantReport {
    let checks = vec![
        single_writer(snapshots, history),
        acknowledged_kept(snapshots, acked),
        money_conserved(snapshots),
        converged(snapshots),
        idempotent(snapshots),
        transfers_settled(snapshots),
        saga_converged(snapshots),
        transfers::booked_once(snapshots, acked, sent_transfers),
    ];
    InvariantReport {
        regions: snapshots.iter().map(|s| s.region.clone()).collect(),
        checks,
    }
}

/// 1. Every entry was committed by a region the history gave its slot (or the account)
///    at that epoch, and no (account, seq) holds two different events across regions.
fn single_writer(snapshots: &[AuditSnapshot], history: &[ChangeRecord]) -> Check {
    let mut slot_grants: HashSet<(u32, u64, &str)> = HashSet::new();
    let mut account_grants: HashSet<(AccountId, u64, &str)> = HashSet::new();
    for change in history {
        for step in &change.moves {
            match step.target {
                Target::Slots { first, last } => {
                    for slot in first..=last {
                        slot_grants.insert((slot, step.epoch, step.to.as_str()));
                    }
                }
                Target::Account(account) => {
                    account_grants.insert((account, step.epoch, step.to.as_str()));
                }
            }
        }
    }
    let mut problems = Vec::new();
    let mut seen: HashMap<(&str, i64), (Option<Uuid>, &str)> = HashMap::new();
    for snapshot in snapshots {
        for entry in &snapshot.entries {
            let epoch = u64::try_from(entry.epoch).unwrap_or(0);
            let granted = entry.account.parse::<AccountId>().is_ok_and(|account| {
                account_grants.contains(&(account, epoch, entry.origin.as_str()))
                    || slot_grants.contains(&(
                        u32::from(account.slot()),
                        epoch,
                        entry.origin.as_str(),
                    ))
            });
            if !granted {
                problems.push(format!(
                    "{} seq {} was committed by {} at epoch {}, which never held it then (seen in {})",
                    entry.account, entry.seq, entry.origin, entry.epoch, snapshot.region
                ));
            }
            match seen.get(&(entry.account.as_str(), entry.seq)) {
                Some((event, region)) if *event != entry.event_id => problems.push(format!(
                    "{} seq {}: event {:?} in {region}, {:?} in {}",
                    entry.account, entry.seq, event, entry.event_id, snapshot.region
                )),
                Some(_) => {}
                None => {
                    seen.insert(
                        (entry.account.as_str(), entry.seq),
                        (entry.event_id, snapshot.region.as_str()),
                    );
                }
            }
        }
    }
    check(
        "single writer",
        problems,
        format!("{} entries, each committed under its lease", seen.len()),
    )
}

/// 2. Every acknowledged write is present in every region, as itself or replayed.
fn acknowledged_kept(snapshots: &[AuditSnapshot], acked: &[AckedWrite]) -> Check {
    let mut problems = Vec::new();
    let mut replayed = 0;
    for snapshot in snapshots {
        let by_txn: HashMap<Uuid, &AuditEntry> = snapshot
            .entries
            .iter()
            .filter(|e| e.kind == "deposit" || e.kind == "withdrawal")
            .map(|e| (e.txn_id, e))
            .collect();
        for write in acked.iter().filter(|w| !w.transfer) {
            match by_txn.get(&write.txn_id) {
                None => problems.push(format!(
                    "acknowledged {} write to {} (seq {}, txn {}) is missing in {}",
                    if write.replicated {
                        "ack=replicated"
                    } else {
                        "ack=local"
                    },
                    write.account,
                    write.seq,
                    write.txn_id,
                    snapshot.region
                )),
                Some(entry) if entry.reconciles.is_some() => {
                    // A write first acknowledged as a replay of its reconciled entry
                    // (its retry reached the new owner after the late original was
                    // replayed) was never promised before the loss: only an
                    // acknowledgement naming another entry (the lost original) counts.
                    let acked_the_replay =
                        write.seq == entry.seq && write.epoch == Some(entry.epoch);
                    if write.replicated && !acked_the_replay {
                        problems.push(format!(
                            "ack=replicated write to {} seq {} needed reconciliation (now seq {}) in {}",
                            write.account, write.seq, entry.seq, snapshot.region
                        ));
                    }
                    replayed += 1;
                }
                Some(_) => {}
            }
        }
    }
    let regions = snapshots.len().max(1);
    check(
        "no acknowledged write lost",
        problems,
        format!(
            "{} acknowledged writes present in every region ({} as reconciliation replays)",
            acked.len(),
            replayed / regions
        ),
    )
}

/// 3. Per region and currency, balances plus money in flight (debited, not yet
///    credited or refunded) sum to the money that came in minus what left, to the
///    cent; no balance is negative unless the account holds a flagged reconciliation.
fn money_conserved(snapshots: &[AuditSnapshot]) -> Check {
    let mut problems = Vec::new();
    for snapshot in snapshots {
        for (currency, total) in &snapshot.totals {
            let in_flight = total.in_flight.parse::<Decimal>().unwrap_or_default();
            let held = total
                .balances
                .parse::<Decimal>()
                .ok()
                .map(|b| b + in_flight);
            if held != total.external_net.parse::<Decimal>().ok() {
                problems.push(format!(
                    "{}: {currency} balances sum to {} with {} in flight, but deposits minus withdrawals are {}",
                    snapshot.region, total.balances, in_flight, total.external_net
                ));
            }
        }
        for account in &snapshot.accounts {
            let negative = account
                .balance
                .parse::<Decimal>()
                .is_ok_and(|b| b.is_sign_negative() && !b.is_zero());
            if negative && !account.flagged {
                problems.push(format!(
                    "{}: {} has balance {} without a flagged reconciliation",
                    snapshot.region, account.id, account.balance
                ));
            }
        }
    }
    check(
        "money conserved",
        problems,
        "balances plus money in flight equal deposits minus withdrawals in every region".into(),
    )
}

/// 4. Every region holds the same accounts at the same seq, epoch and balance, and no
///    late event still awaits reconciliation.
pub fn converged(snapshots: &[AuditSnapshot]) -> Check {
    let mut problems = Vec::new();
    let Some(first) = snapshots.first() else {
        return check(
            "convergence",
            vec!["no region answered".into()],
            String::new(),
        );
    };
    let reference: BTreeMap<&str, _> = first.accounts.iter().map(|a| (a.id.as_str(), a)).collect();
    for snapshot in snapshots {
        if snapshot.late_pending > 0 {
            problems.push(format!(
                "{}: {} late events still await reconciliation",
                snapshot.region, snapshot.late_pending
            ));
        }
        if snapshot.region == first.region {
            continue;
        }
        let here: BTreeMap<&str, _> = snapshot
            .accounts
            .iter()
            .map(|a| (a.id.as_str(), a))
            .collect();
        for (id, theirs) in &reference {
            match here.get(id) {
                None => problems.push(format!(
                    "{id} exists in {} but not in {}",
                    first.region, snapshot.region
                )),
                Some(ours)
                    if (ours.seq, ours.epoch, &ours.balance)
                        != (theirs.seq, theirs.epoch, &theirs.balance) =>
                {
                    problems.push(format!(
                        "{id}: {} has seq {} epoch {} balance {}, {} has seq {} epoch {} balance {}",
                        first.region, theirs.seq, theirs.epoch, theirs.balance,
                        snapshot.region, ours.seq, ours.epoch, ours.balance
                    ));
                }
                Some(_) => {}
            }
        }
        for id in here.keys().filter(|id| !reference.contains_key(*id)) {
            problems.push(format!(
                "{id} exists in {} but not in {}",
                snapshot.region, first.region
            ));
        }
    }
    check(
        "convergence",
        problems,
        format!(
            "{} accounts identical in {} regions",
            reference.len(),
            snapshots.len()
        ),
    )
}

/// 5. No request applied twice: one deposit or withdrawal per transaction id.
fn idempotent(snapshots: &[AuditSnapshot]) -> Check {
    let mut problems = Vec::new();
    for snapshot in snapshots {
        let mut seen: HashMap<Uuid, &AuditEntry> = HashMap::new();
        for entry in snapshot
            .entries
            .iter()
            .filter(|e| e.kind == "deposit" || e.kind == "withdrawal")
        {
            if let Some(first) = seen.insert(entry.txn_id, entry) {
                problems.push(format!(
                    "{}: txn {} applied twice ({} seq {} and seq {})",
                    snapshot.region, entry.txn_id, entry.account, first.seq, entry.seq
                ));
            }
        }
    }
    check("idempotency", problems, "no request applied twice".into())
}

/// The txn id the ledger derives from an Idempotency-Key (migration V5's
/// `ledger.txn_of_key`): md5 of `ledger-txn:<key>` read as a UUID.
pub fn txn_of_key(key: &str) -> Uuid {
    use md5::Digest as _;
    let digest: [u8; 16] = md5::Md5::digest(format!("ledger-txn:{key}").as_bytes()).into();
    Uuid::from_bytes(digest)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ledger_wire::failover::{AuditAccount, AuditTotal};
    use ledger_wire::ownership::{ChangeKind, Move};

    use super::*;

    const ACCOUNT: &str = "ac_0001_000000000001";

    fn snapshot(
        region: &str,
        origin: &str,
        epoch: i64,
        balance: &str,
        external: &str,
    ) -> AuditSnapshot {
        let txn = Uuid::from_u128(7);
        AuditSnapshot {
            region: region.into(),
            next: None,
            accounts: vec![AuditAccount {
                id: ACCOUNT.into(),
                seq: 1,
                epoch,
                balance: balance.into(),
                flagged: false,
            }],
            entries: vec![AuditEntry {
                account: ACCOUNT.into(),
                seq: 1,
                epoch,
                origin: origin.into(),
                event_id: Some(Uuid::from_u128(1)),
                txn_id: txn,
                kind: "deposit".into(),
                reconciles: None,
                transfer_id: None,
            }],
            totals: BTreeMap::from([(
                "EUR".to_owned(),
                AuditTotal {
                    balances: balance.into(),
                    external_net: external.into(),
                    in_flight: "0".into(),
                },
            )]),
            late_pending: 0,
            transfers: Vec::new(),
        }
    }

    fn history() -> Vec<ChangeRecord> {
        vec![ChangeRecord {
            version: 1,
            epoch: 1,
            at_ms: 0,
            actor: "test".into(),
            reason: String::new(),
            kind: ChangeKind::Init {
                slot_count: 4,
                lease_ttl_ms: 2000,
            },
            moves: vec![Move {
                target: Target::Slots { first: 0, last: 3 },
                from: None,
                to: "eu-west".into(),
                epoch: 1,
                frozen: false,
            }],
            regions: Vec::new(),
        }]
    }

    #[test]
    fn agreeing_regions_pass_every_check() {
        let snapshots = [
            snapshot("eu-west", "eu-west", 1, "5.00", "5.00"),
            snapshot("us-east", "eu-west", 1, "5.00", "5.00"),
        ];
        let acked = [AckedWrite {
            account: ACCOUNT.into(),
            txn_id: Uuid::from_u128(7),
            seq: 1,
            epoch: Some(1),
            replicated: true,
            transfer: false,
        }];
        let report = check_invariants(&snapshots, &history(), &acked, &HashSet::new());
        assert!(report.ok(), "{report:#?}");
    }

    #[test]
    fn each_broken_invariant_is_named() {
        // us-east committed at an epoch it never held, with money from nowhere.
        let snapshots = [
            snapshot("eu-west", "eu-west", 1, "5.00", "5.00"),
            snapshot("us-east", "us-east", 1, "6.00", "5.00"),
        ];
        let acked = [AckedWrite {
            account: ACCOUNT.into(),
            txn_id: Uuid::from_u128(8),
            seq: 1,
            epoch: Some(1),
            replicated: false,
            transfer: false,
        }];
        let report = check_invariants(&snapshots, &history(), &acked, &HashSet::new());
        assert_eq!(
            report.failed(),
            [
                "single writer",
                "no acknowledged write lost",
                "money conserved",
                "convergence"
            ]
        );
    }

    /// The account's only deposit, in every region, as a reconciliation replay by the
    /// epoch-2 owner of a late original.
    fn replayed_everywhere() -> [AuditSnapshot; 2] {
        [
            snapshot("eu-west", "eu-west", 2, "5.00", "5.00"),
            snapshot("us-east", "eu-west", 2, "5.00", "5.00"),
        ]
        .map(|mut s| {
            s.entries[0].reconciles = Some(Uuid::from_u128(99));
            s
        })
    }

    fn replicated_ack(epoch: i64) -> [AckedWrite; 1] {
        [AckedWrite {
            account: ACCOUNT.into(),
            txn_id: Uuid::from_u128(7),
            seq: 1,
            epoch: Some(epoch),
            replicated: true,
            transfer: false,
        }]
    }

    #[test]
    fn a_replicated_ack_of_a_lost_original_fails() {
        let report = acknowledged_kept(&replayed_everywhere(), &replicated_ack(1));
        assert!(!report.ok, "{report:#?}");
        assert!(report.examples[0].contains("needed reconciliation"));
    }

    #[test]
    fn a_replicated_ack_that_names_the_replay_passes() {
        // The client's retry reached the new owner after reconciliation: its answer
        // named the replayed entry, so nothing acknowledged was lost.
        let report = acknowledged_kept(&replayed_everywhere(), &replicated_ack(2));
        assert!(report.ok, "{report:#?}");
    }

    #[test]
    fn txn_ids_follow_the_database_rule() {
        // PostgreSQL: SELECT md5('ledger-txn:k1')::uuid
        assert_eq!(
            txn_of_key("k1").to_string(),
            "daa5a1ce-6b18-0fee-3dad-e6e0ab323ad8"
        );
    }
}
