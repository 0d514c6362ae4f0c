//! Property tests of the ownership state machine: random command sequences against
//! the invariants the rest of the system relies on.

use ledger_wire::ownership::{
    ChangeKind, Command, Outcome, OwnershipMap, RegionSpec, RegionStatus, RejectCode, SlotAtEpoch,
    Target,
};
use ledger_wire::AccountId;
use ownership::state::{OwnershipState, Proposal};
use proptest::prelude::*;

const SLOTS: u32 = 16;
const TTL_MS: u64 = 1_000;
const REGIONS: [&str; 4] = ["eu", "us", "ap", "sa"];

#[derive(Debug, Clone)]
enum Step {
    Renew(usize),
    Freeze(Vec<u32>, bool),
    /// Slots with `None` = the epoch the slot has now, `Some(e)` = a guess.
    Transfer(Vec<(u32, Option<u64>)>, usize),
    Promote(usize, bool),
    Rehome(u16, usize, Option<Option<u64>>),
    SetRegion(usize, Option<u32>, Option<RegionStatus>),
    InitAgain,
}

fn status() -> impl Strategy<Value = RegionStatus> {
    prop_oneof![
        Just(RegionStatus::Active),
        Just(RegionStatus::Draining),
        Just(RegionStatus::Down)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let slots = proptest::collection::vec(0..SLOTS + 1, 1..5);
    prop_oneof![
        3 => (0..REGIONS.len()).prop_map(Step::Renew),
        1 => (slots.clone(), any::<bool>()).prop_map(|(s, f)| Step::Freeze(s, f)),
        3 => (
            proptest::collection::vec((0..SLOTS, proptest::option::weighted(0.3, 0u64..12)), 1..5),
            0..REGIONS.len()
        )
            .prop_map(|(s, to)| Step::Transfer(s, to)),
        2 => (0..REGIONS.len(), any::<bool>()).prop_map(|(r, f)| Step::Promote(r, f)),
        2 => (0..SLOTS as u16, 0..REGIONS.len(), proptest::option::of(proptest::option::weighted(0.5, 0u64..12)))
            .prop_map(|(slot, to, e)| Step::Rehome(slot, to, e)),
        1 => (0..REGIONS.len(), proptest::option::of(0u32..4), proptest::option::of(status()))
            .prop_map(|(r, w, s)| Step::SetRegion(r, w, s)),
        1 => Just(Step::InitAgain),
    ]
}

fn account(slot: u16) -> AccountId {
    AccountId::new(slot, 7).expect("slot in range")
}

fn account_epoch(map: &OwnershipMap, account: AccountId) -> u64 {
    map.home_of(account).map_or(0, |(_, epoch)| epoch)
}

/// Turns a generated step into a command, resolving "the current epoch" against `map`.
fn command(step: &Step, map: &OwnershipMap) -> Command {
    match step {
        Step::Renew(r) => Command::RenewLease {
            region: REGIONS[*r].into(),
        },
        Step::Freeze(slots, frozen) => Command::FreezeSlots {
            slots: slots.clone(),
            frozen: *frozen,
        },
        Step::Transfer(slots, to) => Command::TransferSlots {
            slots: slots
                .iter()
                .map(|(slot, guess)| SlotAtEpoch {
                    slot: *slot,
                    expected_epoch: guess.unwrap_or(map.slots[*slot as usize].epoch),
                })
                .collect(),
            to: REGIONS[*to].into(),
        },
        Step::Promote(r, force) => Command::Promote {
            region: REGIONS[*r].into(),
            force: *force,
        },
        Step::Rehome(slot, to, expected) => Command::RehomeAccount {
            account: account(*slot),
            to: REGIONS[*to].into(),
            expected_epoch: expected
                .map(|guess| guess.unwrap_or_else(|| account_epoch(map, account(*slot)))),
        },
        Step::SetRegion(r, weight, status) => Command::SetRegion {
            region: REGIONS[*r].into(),
            weight: *weight,
            status: *status,
        },
        Step::InitAgain => Command::InitCluster {
            slot_count: SLOTS,
            lease_ttl_ms: TTL_MS,
            regions: vec![RegionSpec {
                name: "eu".into(),
                weight: 1,
            }],
        },
    }
}

fn initialised() -> OwnershipState {
    let mut state = OwnershipState::default();
    let outcome = state.apply(Proposal {
        at_ms: 0,
        actor: "test".into(),
        reason: String::new(),
        command: Command::InitCluster {
            slot_count: SLOTS,
            lease_ttl_ms: TTL_MS,
            // "sa" is added later by SetRegion, so regions come and go.
            regions: REGIONS[..3]
                .iter()
                .map(|name| RegionSpec {
                    name: (*name).into(),
                    weight: 1,
                })
                .collect(),
        },
    });
    assert!(matches!(outcome, Outcome::Applied { .. }));
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ownership_invariants_hold(steps in proptest::collection::vec((step(), 0i64..1_500), 1..60)) {
        let mut state = initialised();
        let mut now = 0i64;
        let mut last_epoch = state.map().epoch;
        for (step, elapsed) in steps {
            now += elapsed;
            let before = state.map();
            let history_before = state.history_len();
            let command = command(&step, &before);
            let outcome = state.apply(Proposal { at_ms: now, actor: "test".into(), reason: "prop".into(), command: command.clone() });
            let after = state.map();

            // Every slot has exactly one home, and it is a known region.
            prop_assert_eq!(after.slots.len(), SLOTS as usize);
            for owner in &after.slots {
                prop_assert!(after.regions.iter().any(|r| r.name == owner.region));
                prop_assert!(owner.epoch <= after.epoch);
            }
            for owner in after.overrides.values() {
                prop_assert!(after.regions.iter().any(|r| r.name == owner.region));
                prop_assert!(owner.epoch <= after.epoch);
            }

            match &outcome {
                Outcome::Rejected { code, .. } => {
                    // A refused command changes nothing.
                    prop_assert_eq!(&after, &before);
                    prop_assert_eq!(state.history_len(), history_before);
                    let _ = code;
                }
                Outcome::Applied { change: Some(change), .. } => {
                    prop_assert_eq!(change.version, before.version + 1);
                    let moves_owner = matches!(change.kind, ChangeKind::Transfer | ChangeKind::Promote { .. } | ChangeKind::Rehome);
                    if moves_owner {
                        // Epochs strictly increase with each ownership change ...
                        prop_assert!(change.epoch > last_epoch);
                        last_epoch = change.epoch;
                        // ... and every moved slot or account gets the new epoch.
                        for step in &change.moves {
                            prop_assert_eq!(step.epoch, change.epoch);
                            let old = match step.target {
                                Target::Slots { first, last } => (first..=last)
                                    .map(|slot| before.slots[slot as usize].epoch)
                                    .max()
                                    .unwrap_or_default(),
                                Target::Account(a) => account_epoch(&before, a),
                            };
                            prop_assert!(step.epoch > old);
                        }
                    } else {
                        prop_assert_eq!(change.epoch, before.epoch);
                    }
                }
                Outcome::Applied { change: None, .. } | Outcome::Lease(_) => {
                    prop_assert_eq!(after.version, before.version);
                    prop_assert_eq!(&after.slots, &before.slots);
                    prop_assert_eq!(&after.overrides, &before.overrides);
                }
            }

            // A transfer naming a stale epoch is refused.
            if let Command::TransferSlots { slots, .. } = &command {
                let stale = slots.iter().any(|s| before.slots.get(s.slot as usize).is_some_and(|o| o.epoch != s.expected_epoch));
                if stale {
                    let refused = matches!(outcome, Outcome::Rejected { code: RejectCode::StaleEpoch | RejectCode::UnknownRegion | RejectCode::RegionDown | RejectCode::InvalidArgument, .. });
                    prop_assert!(refused, "stale transfer was applied: {:?}", outcome);
                }
            }
            // A promote of a region whose lease is live is refused unless forced (as
            // live-lease, or as already down when a forced promote took it first: its
            // lease's expiry stays where the last renewal put it).
            if let Command::Promote { region, force: false } = &command {
                let live = before.regions.iter().find(|r| &r.name == region)
                    .and_then(|r| r.lease_expires_at_ms)
                    .is_some_and(|expiry| expiry > now);
                if live {
                    let refused = matches!(outcome, Outcome::Rejected { code: RejectCode::LeaseLive | RejectCode::RegionDown, .. });
                    prop_assert!(refused, "promote during a live lease: {:?}", outcome);
                }
            }
            // A renewal lists exactly what the region owns.
            if let Outcome::Lease(grant) = &outcome {
                let owned: Vec<u32> = after.slots.iter().enumerate()
                    .filter(|(_, o)| o.region == grant.region).map(|(i, _)| i as u32).collect();
                let granted: Vec<u32> = grant.slot_numbers().collect();
                for run in &grant.slots {
                    for slot in run.first..=run.last {
                        prop_assert_eq!(after.slots[slot as usize].epoch, run.epoch);
                        prop_assert_eq!(after.slots[slot as usize].frozen, run.frozen);
                    }
                }
                prop_assert_eq!(granted, owned);
            }
        }

        // The history alone rebuilds the map (what watchers rely on).
        let mut rebuilt = OwnershipMap {
            version: 0, epoch: 0, slot_count: 0, lease_ttl_ms: 0,
            regions: Vec::new(), slots: Vec::new(), overrides: Default::default(),
        };
        for change in state.changes_since(0, usize::MAX) {
            rebuilt.apply(&change);
        }
        let mut expected = state.map();
        // Lease expiries are not history; compare everything else.
        for region in expected.regions.iter_mut().chain(rebuilt.regions.iter_mut()) {
            region.lease_expires_at_ms = None;
        }
        prop_assert_eq!(rebuilt, expected);
    }
}

fn at(state: &mut OwnershipState, at_ms: i64, command: Command) -> Outcome {
    state.apply(Proposal {
        at_ms,
        actor: "test".into(),
        reason: String::new(),
        command,
    })
}

#[test]
fn lease_lifecycle_gates_promote() {
    let mut state = initialised();
    let renew = Command::RenewLease {
        region: "eu".into(),
    };
    let promote = Command::Promote {
        region: "eu".into(),
        force: false,
    };
    assert!(matches!(
        at(&mut state, 100, renew.clone()),
        Outcome::Lease(_)
    ));
    // Renewals keep the region live.
    assert!(matches!(at(&mut state, 900, renew), Outcome::Lease(_)));
    assert!(matches!(
        at(&mut state, 1_800, promote.clone()),
        Outcome::Rejected {
            code: RejectCode::LeaseLive,
            ..
        }
    ));
    // The lease ran out at 900 + ttl: promote is allowed and spreads eu's slots.
    let Outcome::Applied {
        change: Some(change),
        ..
    } = at(&mut state, 1_901, promote)
    else {
        panic!("promote after expiry refused");
    };
    // eu-west's 6 slots (0-5) split 3/3 between us and ap: two runs.
    assert_eq!(change.moves.len(), 2);
    let counts = state.map();
    assert_eq!(counts.slot_counts().get("eu"), Some(&0));
    assert_eq!(counts.slot_counts().get("us"), Some(&8));
    // The deposed region may still renew and learns it owns nothing.
    let Outcome::Lease(grant) = at(
        &mut state,
        2_000,
        Command::RenewLease {
            region: "eu".into(),
        },
    ) else {
        panic!("renewal refused");
    };
    assert!(grant.slots.is_empty());
}

#[test]
fn forced_promote_is_recorded_as_forced() {
    let mut state = initialised();
    at(
        &mut state,
        0,
        Command::RenewLease {
            region: "us".into(),
        },
    );
    let Outcome::Applied {
        change: Some(change),
        ..
    } = at(
        &mut state,
        10,
        Command::Promote {
            region: "us".into(),
            force: true,
        },
    )
    else {
        panic!("forced promote refused");
    };
    assert_eq!(
        change.kind,
        ChangeKind::Promote {
            region: "us".into(),
            forced: true
        }
    );
}

#[test]
fn a_region_marked_down_by_hand_keeps_a_live_lease_while_it_owns_slots() {
    let mut state = initialised();
    let down = Command::SetRegion {
        region: "eu".into(),
        weight: None,
        status: Some(RegionStatus::Down),
    };
    assert!(matches!(at(&mut state, 0, down), Outcome::Applied { .. }));
    let Outcome::Lease(grant) = at(
        &mut state,
        10,
        Command::RenewLease {
            region: "eu".into(),
        },
    ) else {
        panic!("renewal refused");
    };
    assert!(grant.slot_numbers().count() > 0);
    // It still owns slots and renews, so it may still be writing: promote must wait.
    assert!(matches!(
        at(
            &mut state,
            20,
            Command::Promote {
                region: "eu".into(),
                force: false
            }
        ),
        Outcome::Rejected {
            code: RejectCode::LeaseLive,
            ..
        }
    ));
}

/// A promote resent after its first answer was lost must not bump the epoch again: the
/// second is refused as `region_down`, which the failover tool reads as "the first one
/// committed".
#[test]
fn a_second_promote_of_the_same_region_is_refused() {
    let mut state = initialised();
    let promote = || Command::Promote {
        region: "us".into(),
        force: true,
    };
    assert!(matches!(
        at(&mut state, 10, promote()),
        Outcome::Applied { .. }
    ));
    assert!(matches!(
        at(&mut state, 20, promote()),
        Outcome::Rejected {
            code: RejectCode::RegionDown,
            ..
        }
    ));
}
