//! Each invariant on agreeing regions and on a planted violation of it.

use std::collections::BTreeMap;

use ledger_wire::failover::{AuditAccount, AuditEntry, AuditTotal};
use ledger_wire::ownership::{ChangeKind, Move, Target};

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

/// A balance changed behind the region's back: its reported sum still matches the
/// money that came in, but the accounts no longer add up to it.
#[test]
fn accounts_that_do_not_add_up_to_the_reported_sum_break_conservation() {
    let mut tampered = snapshot("us-east", "eu-west", 1, "5.00", "5.00");
    tampered.accounts[0].balance = "5.01".into();
    let check = money_conserved(&[tampered]);
    assert!(!check.ok);
    assert!(check.examples[0].contains("add up to 5.01"), "{check:?}");
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

/// Without a request history the checks that compare against what clients were told
/// can decide nothing: unknown, not valid, and not a failure.
#[test]
fn checks_without_a_request_history_are_unknown() {
    let snapshots = [
        snapshot("eu-west", "eu-west", 1, "5.00", "5.00"),
        snapshot("us-east", "eu-west", 1, "5.00", "5.00"),
    ];
    let report = check_invariants(&snapshots, &history(), &[], &HashSet::new());
    assert!(report.ok());
    let unknown: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Unknown)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        unknown,
        ["no acknowledged write lost", "transfers booked once"]
    );
}
