//! What this region may write right now: the slots and accounts of its last lease
//! grant, when each becomes usable (the fencing delay), and until when the lease holds
//! by the node's own monotonic clock.
//!
//! Pure logic (no I/O), so the rules are unit-tested here; `sync` feeds it grants.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ledger_wire::ownership::LeaseGrant;
use ledger_wire::AccountId;

/// One slot or account this region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    pub frozen: bool,
    /// Writes may start from here on (after the fencing delay, for an unplanned gain).
    pub usable_from: Instant,
}

/// Why a write cannot start here although the map names this region as home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No renewal succeeded recently enough (or ever).
    LeaseExpired,
    /// The last grant does not list the slot or account at that epoch (yet).
    NotGranted,
    /// Frozen for a switchover.
    Frozen,
    /// Gained without a release by the previous owner: waiting out the fencing delay.
    Fenced { remaining: Duration },
}

impl Refusal {
    pub fn describe(&self) -> String {
        match self {
            Refusal::LeaseExpired => "this region's ownership lease has run out".into(),
            Refusal::NotGranted => "this region's lease does not grant the account yet".into(),
            Refusal::Frozen => "the account's slot is frozen for a switchover".into(),
            Refusal::Fenced { remaining } => format!(
                "the account's slot was just taken over; writes start in {} ms (fencing delay)",
                remaining.as_millis()
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LeaseState {
    /// When the renewal behind this grant was sent; `None` = static ownership, no expiry.
    sent_at: Option<Instant>,
    ttl: Duration,
    /// Indexed by slot.
    slots: Vec<Option<Held>>,
    accounts: HashMap<AccountId, Held>,
    away: HashSet<AccountId>,
    map_version: u64,
}

/// Slots and accounts (with the epoch they were given at) whose previous owner gave
/// them up in a planned move, so no fencing delay applies.
#[derive(Debug, Clone, Default)]
pub struct Released {
    pub slots: HashSet<(u32, u64)>,
    pub accounts: HashSet<(AccountId, u64)>,
}

impl LeaseState {
    /// Nothing held yet.
    pub fn empty(slot_count: u32) -> Self {
        LeaseState {
            sent_at: Some(far_past()),
            ttl: Duration::ZERO,
            slots: vec![None; slot_count as usize],
            accounts: HashMap::new(),
            away: HashSet::new(),
            map_version: 0,
        }
    }

    /// Every slot at `epoch`, for ever (single-region mode without the ownership service).
    pub fn static_all(slot_count: u32, epoch: u64) -> Self {
        let now = Instant::now();
        let held = Held {
            epoch,
            frozen: false,
            usable_from: now,
        };
        LeaseState {
            sent_at: None,
            ttl: Duration::MAX,
            slots: vec![Some(held); slot_count as usize],
            accounts: HashMap::new(),
            away: HashSet::new(),
            map_version: 0,
        }
    }

    /// Takes a new grant from a renewal sent at `sent_at`. What the grant does not list
    /// is dropped. A slot or account newly held (or held at a new epoch) becomes usable
    /// after `fence`, unless `released` says its previous owner gave it up (planned
    /// move) or it never had one (epoch 1, the cluster's first assignment).
    pub fn apply_grant(
        &mut self,
        grant: &LeaseGrant,
        sent_at: Instant,
        fence: Duration,
        released: &Released,
    ) {
        let now = Instant::now();
        // A release learned after the gain (the failover tool confirms the old owner
        // drained) ends a fencing delay already running.
        let usable_from = |previous: Option<Held>, epoch: u64, released: bool| match previous {
            Some(p) if p.epoch == epoch && released => p.usable_from.min(now),
            Some(p) if p.epoch == epoch => p.usable_from,
            _ if released || epoch == 1 => now,
            _ => now + fence,
        };
        let mut slots = vec![None; self.slots.len()];
        for run in &grant.slots {
            for slot in run.first..=run.last {
                let Some(cell) = slots.get_mut(slot as usize) else {
                    continue;
                };
                let previous = self.slots.get(slot as usize).copied().flatten();
                *cell = Some(Held {
                    epoch: run.epoch,
                    frozen: run.frozen,
                    usable_from: usable_from(
                        previous,
                        run.epoch,
                        released.slots.contains(&(slot, run.epoch)),
                    ),
                });
            }
        }
        let accounts = grant
            .accounts
            .iter()
            .map(|a| {
                let previous = self.accounts.get(&a.account).copied();
                let held = Held {
                    epoch: a.epoch,
                    frozen: false,
                    usable_from: usable_from(
                        previous,
                        a.epoch,
                        released.accounts.contains(&(a.account, a.epoch)),
                    ),
                };
                (a.account, held)
            })
            .collect();
        self.slots = slots;
        self.accounts = accounts;
        self.away = grant.accounts_away.iter().copied().collect();
        self.sent_at = Some(sent_at);
        self.ttl = Duration::from_millis(grant.ttl_ms);
        self.map_version = grant.map_version;
    }

    /// Drops a slot at once (the watch saw it move away before the next renewal).
    pub fn drop_slot(&mut self, slot: u32) {
        if let Some(cell) = self.slots.get_mut(slot as usize) {
            *cell = None;
        }
    }

    pub fn drop_account(&mut self, account: AccountId) {
        self.accounts.remove(&account);
        self.away.insert(account);
    }

    /// Whether a write may start now, by the design's rule (ARCHITECTURE.md): last renewal sent + ttl -
    /// margin still ahead.
    pub fn live(&self, margin: Duration, now: Instant) -> bool {
        match self.sent_at {
            None => true,
            Some(sent) => sent + self.ttl.saturating_sub(margin) > now,
        }
    }

    /// Time until the lease runs out by the issuer's clock (last renewal sent + ttl),
    /// before this node's safety margins; `None` for static ownership (no expiry).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.sent_at
            .map(|sent| (sent + self.ttl).saturating_duration_since(now))
    }

    /// The epoch at which `account` may be written now, or why not. `map_epoch` is the
    /// epoch the map gives the account (slot or override).
    pub fn may_write(
        &self,
        account: AccountId,
        map_epoch: u64,
        margin: Duration,
    ) -> Result<u64, Refusal> {
        let now = Instant::now();
        if !self.live(margin, now) {
            return Err(Refusal::LeaseExpired);
        }
        if self.away.contains(&account) {
            return Err(Refusal::NotGranted);
        }
        let held = match self.accounts.get(&account) {
            Some(held) => *held,
            None => self
                .slots
                .get(usize::from(account.slot()))
                .copied()
                .flatten()
                .ok_or(Refusal::NotGranted)?,
        };
        if held.epoch != map_epoch {
            return Err(Refusal::NotGranted);
        }
        usable(held, now)
    }

    /// Whether `slot` is held at `epoch`, not frozen, and past any fencing delay.
    pub fn slot_usable(&self, slot: u32, epoch: u64) -> bool {
        let now = Instant::now();
        self.slots
            .get(slot as usize)
            .copied()
            .flatten()
            .is_some_and(|held| held.epoch == epoch && usable(held, now).is_ok())
    }

    /// A slot that can take a new account now, with its epoch.
    pub fn writable_slots(&self, margin: Duration) -> Vec<(u16, u64)> {
        let now = Instant::now();
        if !self.live(margin, now) {
            return Vec::new();
        }
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, held)| {
                let held = (*held)?;
                usable(held, now).ok()?;
                Some((u16::try_from(slot).ok()?, held.epoch))
            })
            .collect()
    }

    /// What to record in the database: granted slots and accounts with the time left
    /// until each is usable, the accounts homed away, and how old the grant is.
    pub fn snapshot(&self) -> LeaseSnapshot {
        let now = Instant::now();
        let remaining = |h: &Held| h.usable_from.saturating_duration_since(now);
        LeaseSnapshot {
            age: self
                .sent_at
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
            ttl: self.ttl,
            slots: self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(slot, held)| {
                    let held = held.as_ref().filter(|h| !h.frozen)?;
                    Some((u32::try_from(slot).ok()?, held.epoch, remaining(held)))
                })
                .collect(),
            accounts: self
                .accounts
                .iter()
                .map(|(a, h)| (*a, h.epoch, remaining(h)))
                .collect(),
            away: self.away.iter().copied().collect(),
        }
    }

    pub fn held_slot_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Slots granted but still fenced at `now` (a fencing wait after an unplanned gain),
    /// and the longest wait left among them.
    pub fn fenced(&self, now: Instant) -> (usize, Duration) {
        self.slots
            .iter()
            .flatten()
            .filter(|h| !h.frozen && h.usable_from > now)
            .fold((0, Duration::ZERO), |(count, longest), h| {
                (count + 1, longest.max(h.usable_from - now))
            })
    }

    pub fn map_version(&self) -> u64 {
        self.map_version
    }
}

fn usable(held: Held, now: Instant) -> Result<u64, Refusal> {
    if held.frozen {
        return Err(Refusal::Frozen);
    }
    if held.usable_from > now {
        return Err(Refusal::Fenced {
            remaining: held.usable_from - now,
        });
    }
    Ok(held.epoch)
}

/// An instant long enough ago that any lease counted from it has run out.
fn far_past() -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
}

/// The lease as the database records it (see `sync::record`).
#[derive(Debug, Clone)]
pub struct LeaseSnapshot {
    pub age: Duration,
    pub ttl: Duration,
    pub slots: Vec<(u32, u64, Duration)>,
    pub accounts: Vec<(AccountId, u64, Duration)>,
    pub away: Vec<AccountId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_wire::ownership::{AccountGrant, SlotGrant};

    fn grant(slots: &[(u32, u32, u64)], accounts: &[(AccountId, u64)]) -> LeaseGrant {
        LeaseGrant {
            region: "a".into(),
            map_version: 3,
            ttl_ms: 2_000,
            granted_at_ms: 0,
            slots: slots
                .iter()
                .map(|&(first, last, epoch)| SlotGrant {
                    first,
                    last,
                    epoch,
                    frozen: false,
                })
                .collect(),
            accounts: accounts
                .iter()
                .map(|&(account, epoch)| AccountGrant { account, epoch })
                .collect(),
            accounts_away: Vec::new(),
        }
    }

    fn account(slot: u16) -> AccountId {
        AccountId::new(slot, 7).expect("account id")
    }

    const MARGIN: Duration = Duration::from_millis(100);
    const FENCE: Duration = Duration::from_secs(60);

    #[test]
    fn first_assignment_is_usable_at_once_and_later_gains_are_fenced() {
        let mut lease = LeaseState::empty(8);
        assert_eq!(
            lease.may_write(account(0), 1, MARGIN),
            Err(Refusal::LeaseExpired)
        );
        lease.apply_grant(
            &grant(&[(0, 3, 1)], &[]),
            Instant::now(),
            FENCE,
            &Released::default(),
        );
        assert_eq!(lease.may_write(account(2), 1, MARGIN), Ok(1));
        assert_eq!(
            lease.may_write(account(2), 5, MARGIN),
            Err(Refusal::NotGranted),
            "a stale map epoch is not the granted one"
        );
        assert_eq!(
            lease.may_write(account(5), 1, MARGIN),
            Err(Refusal::NotGranted)
        );

        // Slots 4-5 arrive by promote at epoch 9: fenced. Slot 6 by a released transfer.
        let released = Released {
            slots: HashSet::from([(6, 9)]),
            ..Released::default()
        };
        lease.apply_grant(
            &grant(&[(0, 3, 1), (4, 6, 9)], &[]),
            Instant::now(),
            FENCE,
            &released,
        );
        assert!(matches!(
            lease.may_write(account(4), 9, MARGIN),
            Err(Refusal::Fenced { .. })
        ));
        assert_eq!(lease.may_write(account(6), 9, MARGIN), Ok(9));
        assert_eq!(lease.writable_slots(MARGIN).len(), 5);
        let (fenced, longest) = lease.fenced(Instant::now());
        assert_eq!(fenced, 2, "slots 4 and 5 wait out their fence");
        assert!(longest > FENCE - Duration::from_secs(1) && longest <= FENCE);

        // A later renewal keeps the fence where it was and drops what it omits.
        lease.apply_grant(
            &grant(&[(4, 6, 9)], &[]),
            Instant::now(),
            FENCE,
            &Released::default(),
        );
        assert!(matches!(
            lease.may_write(account(5), 9, MARGIN),
            Err(Refusal::Fenced { .. })
        ));
        assert_eq!(lease.may_write(account(6), 9, MARGIN), Ok(9));
        assert_eq!(
            lease.may_write(account(0), 1, MARGIN),
            Err(Refusal::NotGranted)
        );
    }

    #[test]
    fn lease_runs_out_by_the_send_time_not_the_answer_time() {
        let mut lease = LeaseState::empty(4);
        let sent = Instant::now() - Duration::from_millis(1_950);
        lease.apply_grant(&grant(&[(0, 3, 1)], &[]), sent, FENCE, &Released::default());
        assert_eq!(
            lease.may_write(account(1), 1, MARGIN),
            Err(Refusal::LeaseExpired),
            "2 s ttl sent 1.95 s ago leaves less than the margin"
        );
        assert!(lease.writable_slots(MARGIN).is_empty());
        let left = lease
            .remaining(Instant::now())
            .expect("a lease with an expiry");
        assert!(left <= Duration::from_millis(50), "{left:?}");
        assert_eq!(
            lease.remaining(sent + Duration::from_secs(5)),
            Some(Duration::ZERO),
            "run out is zero, not negative"
        );
        assert_eq!(
            LeaseState::static_all(4, 1).remaining(Instant::now()),
            None,
            "static ownership has no expiry"
        );
    }

    #[test]
    fn overrides_win_over_slots_and_away_accounts_are_refused() {
        let mut lease = LeaseState::empty(4);
        let moved_in = AccountId::new(3, 1).expect("id");
        let mut g = grant(&[(0, 1, 1)], &[(moved_in, 12)]);
        let moved_out = AccountId::new(0, 2).expect("id");
        g.accounts_away.push(moved_out);
        lease.apply_grant(&g, Instant::now(), Duration::ZERO, &Released::default());
        assert_eq!(lease.may_write(moved_in, 12, MARGIN), Ok(12));
        assert_eq!(
            lease.may_write(moved_out, 1, MARGIN),
            Err(Refusal::NotGranted)
        );
        let snapshot = lease.snapshot();
        assert_eq!(snapshot.slots.len(), 2);
        assert_eq!(snapshot.accounts.len(), 1);
        assert_eq!(snapshot.away, vec![moved_out]);
    }
}
