//! Planned moves against a fake [`Ports`] with a failure injected at each step: what
//! the map ends as (frozen, thawed, transferred), which calls were made, and what the
//! operator is told. The real-process side of the same paths is `chaos/tests/failover.rs`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ledger_wire::failover::{
    Digest, DrainReport, DrainRequest, ReleaseReport, ReleaseRequest, Scope,
};
use ledger_wire::ownership::{
    AccountOwner, ChangeKind, ChangeRecord, Move, Outcome, OwnershipMap, RegionInfo, RegionStatus,
    SlotAtEpoch, SlotOwner, Target,
};
use ledger_wire::AccountId;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Freeze,
    Drain,
    Digest,
    Transfer,
    Release,
    Thaw,
    Rehome,
}

/// A deployment of two regions, `a` owning slots 0-3 and `b` slots 4-7, that fails
/// the steps it is told to and records every call.
struct Fake {
    map: Mutex<OwnershipMap>,
    failing: Vec<Step>,
    calls: Mutex<Vec<Step>>,
    /// The new owner's digest lags the drain's high-water mark for ever.
    never_catches_up: bool,
    /// The freeze is applied but its answer is lost (a leader too slow to commit in
    /// time, or replaced while the command was in flight).
    freeze_answer_lost: bool,
}

const HIGH_WATER: Digest = Digest {
    accounts: 3,
    seq_sum: 10,
};

impl Fake {
    fn new(failing: &[Step]) -> Fake {
        let owner = |region: &str| SlotOwner {
            region: region.into(),
            epoch: 1,
            frozen: false,
        };
        let region = |name: &str| RegionInfo {
            name: name.into(),
            weight: 1,
            status: RegionStatus::Active,
            lease_expires_at_ms: None,
        };
        Fake {
            map: Mutex::new(OwnershipMap {
                version: 1,
                epoch: 1,
                slot_count: 8,
                lease_ttl_ms: 2_000,
                regions: vec![region("a"), region("b")],
                slots: (0..8)
                    .map(|s| owner(if s < 4 { "a" } else { "b" }))
                    .collect(),
                overrides: BTreeMap::new(),
            }),
            failing: failing.to_vec(),
            calls: Mutex::new(Vec::new()),
            never_catches_up: false,
            freeze_answer_lost: false,
        }
    }

    fn call(&self, step: Step) -> Result<(), FailoverError> {
        self.calls.lock().expect("calls").push(step);
        if self.failing.contains(&step) {
            return Err(FailoverError::Node {
                region: "fake".into(),
                detail: format!("injected failure at {step:?}"),
            });
        }
        Ok(())
    }

    fn calls(&self) -> Vec<Step> {
        self.calls.lock().expect("calls").clone()
    }

    fn frozen(&self) -> Vec<u32> {
        let map = self.map.lock().expect("map");
        (0u32..)
            .zip(&map.slots)
            .filter(|(_, o)| o.frozen)
            .map(|(s, _)| s)
            .collect()
    }

    fn owner(&self, slot: u32) -> String {
        self.map.lock().expect("map").slots[slot as usize]
            .region
            .clone()
    }

    fn applied(&self, map: &mut OwnershipMap) -> Outcome {
        map.version += 1;
        Outcome::Applied {
            version: map.version,
            epoch: map.epoch,
            change: None,
        }
    }
}

impl Ports for Fake {
    async fn map(&self) -> Result<OwnershipMap, FailoverError> {
        Ok(self.map.lock().expect("map").clone())
    }

    async fn freeze_slots(
        &self,
        slots: Vec<u32>,
        frozen: bool,
        _reason: &str,
    ) -> Result<Outcome, FailoverError> {
        self.call(if frozen { Step::Freeze } else { Step::Thaw })?;
        let mut map = self.map.lock().expect("map");
        for slot in slots {
            map.slots[slot as usize].frozen = frozen;
        }
        if frozen && self.freeze_answer_lost {
            return Err(FailoverError::Ownership(
                ownership_client::ClientError::OutcomeUnknown(
                    "not committed within 3000 ms".into(),
                ),
            ));
        }
        Ok(self.applied(&mut map))
    }

    async fn transfer_slots(
        &self,
        slots: Vec<SlotAtEpoch>,
        to: &str,
        _reason: &str,
    ) -> Result<Outcome, FailoverError> {
        self.call(Step::Transfer)?;
        let mut map = self.map.lock().expect("map");
        map.epoch += 1;
        let epoch = map.epoch;
        for slot in slots {
            map.slots[slot.slot as usize] = SlotOwner {
                region: to.into(),
                epoch,
                frozen: false,
            };
        }
        Ok(self.applied(&mut map))
    }

    async fn rehome_account(
        &self,
        account: AccountId,
        to: &str,
        _expected_epoch: Option<u64>,
        _reason: &str,
    ) -> Result<Outcome, FailoverError> {
        self.call(Step::Rehome)?;
        let mut map = self.map.lock().expect("map");
        map.epoch += 1;
        let epoch = map.epoch;
        map.overrides.insert(
            account,
            AccountOwner {
                region: to.into(),
                epoch,
            },
        );
        Ok(self.applied(&mut map))
    }

    async fn drain(
        &self,
        region: &str,
        _request: &DrainRequest,
        _timeout: Duration,
    ) -> Result<DrainReport, FailoverError> {
        self.call(Step::Drain)?;
        Ok(DrainReport {
            region: region.into(),
            waited_transactions: 1,
            published_while_draining: 2,
            high_water: HIGH_WATER,
            took_ms: 1,
        })
    }

    async fn digest(
        &self,
        _region: &str,
        _scope: &Scope,
        _timeout: Duration,
    ) -> Result<Digest, FailoverError> {
        self.call(Step::Digest)?;
        Ok(if self.never_catches_up {
            Digest::default()
        } else {
            HIGH_WATER
        })
    }

    async fn release(
        &self,
        _region: &str,
        _request: &ReleaseRequest,
        _timeout: Duration,
    ) -> Result<ReleaseReport, FailoverError> {
        self.call(Step::Release)?;
        Ok(ReleaseReport {
            usable: true,
            took_ms: 1,
        })
    }
}

fn quick() -> SwitchoverOptions {
    SwitchoverOptions {
        timeout: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn a_switchover_without_failures_moves_the_slots() {
    let fake = Fake::new(&[]);
    let report = switch_slots(&fake, &[1, 2], "b", quick())
        .await
        .expect("moved");
    assert_eq!(
        fake.calls(),
        [
            Step::Freeze,
            Step::Drain,
            Step::Digest,
            Step::Transfer,
            Step::Release
        ]
    );
    assert_eq!(
        (fake.owner(1), fake.owner(2), fake.owner(0)),
        ("b".into(), "b".into(), "a".into())
    );
    assert!(fake.frozen().is_empty());
    assert_eq!(report.high_water, HIGH_WATER);
    assert_eq!(report.epoch, 2);
}

/// Found by the chaos suite on a loaded machine: a failback's freeze committed after its
/// answer timed out, the tool gave up without a thaw, and the slots stayed frozen, so
/// 138 transfers kept their money in flight for good.
#[tokio::test]
async fn a_freeze_whose_answer_was_lost_is_thawed() {
    let mut fake = Fake::new(&[]);
    fake.freeze_answer_lost = true;
    let error = switch_slots(&fake, &[1, 2], "b", quick())
        .await
        .expect_err("the freeze's answer is lost");
    assert!(error.to_string().contains("outcome is unknown"), "{error}");
    assert_eq!(fake.calls(), [Step::Freeze, Step::Thaw]);
    assert!(fake.frozen().is_empty(), "no slot stays frozen");
    assert_eq!(fake.owner(1), "a");
}

#[tokio::test]
async fn a_failure_before_the_transfer_thaws_the_slots_at_their_old_owner() {
    for failing in [Step::Drain, Step::Digest, Step::Transfer] {
        let fake = Fake::new(&[failing]);
        let error = switch_slots(&fake, &[1, 2], "b", quick())
            .await
            .expect_err("the step fails");
        assert!(
            error.to_string().contains("injected"),
            "{failing:?}: {error}"
        );
        assert_eq!(
            fake.calls().last(),
            Some(&Step::Thaw),
            "{failing:?} rolls back"
        );
        assert!(fake.frozen().is_empty(), "{failing:?}: slots thawed");
        assert_eq!(fake.owner(1), "a", "{failing:?}: the old owner keeps them");
    }
}

#[tokio::test]
async fn a_new_owner_that_never_catches_up_times_out_and_rolls_back() {
    let mut fake = Fake::new(&[]);
    fake.never_catches_up = true;
    let error = switch_slots(&fake, &[1], "b", quick())
        .await
        .expect_err("no catch-up");
    assert!(matches!(error, FailoverError::Timeout { .. }), "{error}");
    assert!(!fake.calls().contains(&Step::Transfer));
    assert!(fake.frozen().is_empty());
}

#[tokio::test]
async fn a_failed_freeze_changes_nothing() {
    let fake = Fake::new(&[Step::Freeze]);
    switch_slots(&fake, &[1], "b", quick())
        .await
        .expect_err("freeze fails");
    assert_eq!(fake.calls(), [Step::Freeze]);
    assert_eq!(fake.owner(1), "a");
}

#[tokio::test]
async fn a_failed_release_after_the_transfer_keeps_the_move() {
    let fake = Fake::new(&[Step::Release]);
    switch_slots(&fake, &[1], "b", quick())
        .await
        .expect_err("release fails");
    assert!(
        !fake.calls().contains(&Step::Thaw),
        "no rollback after the transfer"
    );
    assert_eq!(
        fake.owner(1),
        "b",
        "the new owner serves after its fencing delay"
    );
}

#[tokio::test]
async fn a_failed_thaw_leaves_the_slots_frozen_and_says_how_to_thaw_them() {
    let fake = Fake::new(&[Step::Drain, Step::Thaw]);
    let error = switch_slots(&fake, &[1, 2, 3], "b", quick())
        .await
        .expect_err("drain fails");
    assert_eq!(fake.frozen(), [1, 2, 3]);
    assert!(
        error.to_string().contains("failover thaw --slots 1-3"),
        "{error}"
    );
    // The command the operator is told to run thaws them.
    let healed = Fake {
        failing: Vec::new(),
        ..fake
    };
    thaw(&healed, &[1, 2, 3]).await.expect("thaw");
    assert!(healed.frozen().is_empty());
}

#[tokio::test]
async fn a_region_switchover_failing_on_its_second_move_reports_the_first() {
    let fake = Fake::new(&[Step::Rehome]);
    let account = AccountId::new(5, 1).expect("id");
    fake.map.lock().expect("map").overrides.insert(
        account,
        AccountOwner {
            region: "a".into(),
            epoch: 1,
        },
    );
    let partial = switch_region(&fake, "a", "b", quick())
        .await
        .expect_err("the rehome fails");
    assert_eq!(partial.done.len(), 1, "the slot move happened");
    assert_eq!(partial.done[0].slots, [0, 1, 2, 3]);
    assert!(
        partial.to_string().contains("after 1 of the moves"),
        "{partial}"
    );
}

#[tokio::test]
async fn a_rehome_drains_catches_up_and_releases() {
    let fake = Fake::new(&[]);
    let account = AccountId::new(1, 9).expect("id");
    let report = rehome(&fake, account, "b", quick()).await.expect("rehomed");
    assert_eq!(
        fake.calls(),
        [Step::Rehome, Step::Drain, Step::Digest, Step::Release]
    );
    assert_eq!(report.accounts, [account.to_string()]);
}

#[test]
fn slot_lists_are_ranges() {
    assert_eq!(slot_list(&[5, 1, 2, 3, 9, 10, 3]), "1-3,5,9-10");
    assert_eq!(slot_list(&[]), "");
}

#[test]
fn failback_takes_back_only_what_the_promote_moved_and_is_unchanged_since() {
    let account = AccountId::new(6, 1).expect("id");
    let promote = ChangeRecord {
        version: 5,
        epoch: 3,
        at_ms: 0,
        actor: "test".into(),
        reason: "promote".into(),
        kind: ChangeKind::Promote {
            region: "a".into(),
            forced: false,
        },
        moves: vec![
            Move {
                target: Target::Slots { first: 0, last: 3 },
                from: Some("a".into()),
                to: "b".into(),
                epoch: 3,
                frozen: false,
            },
            Move {
                target: Target::Account(account),
                from: Some("a".into()),
                to: "c".into(),
                epoch: 3,
                frozen: false,
            },
        ],
        regions: Vec::new(),
    };
    let fake = Fake::new(&[]);
    let mut map = fake.map.lock().expect("map").clone();
    for slot in 0..4 {
        map.slots[slot] = SlotOwner {
            region: "b".into(),
            epoch: 3,
            frozen: false,
        };
    }
    // Slot 2 moved again since (another switchover): it stays where it is now.
    map.slots[2].epoch = 4;
    map.overrides.insert(
        account,
        AccountOwner {
            region: "c".into(),
            epoch: 3,
        },
    );
    let moves = failback_moves(&promote, &map);
    assert_eq!(moves["b"], (vec![0, 1, 3], vec![]));
    assert_eq!(moves["c"], (vec![], vec![account]));
    // Once the account was rehomed again, it is not taken back either.
    map.overrides.get_mut(&account).expect("override").epoch = 7;
    assert!(!failback_moves(&promote, &map).contains_key("c"));
}
