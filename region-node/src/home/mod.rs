//! Which region is each account's home, and whether this region may write it now.
//!
//! Two sources, kept apart on purpose: the ownership **map** (kept fresh by the
//! service's watch) routes requests, and the **lease** (the last renewal's grant, with
//! fencing delays and the renewal's send time) decides whether a write may start here.
//! The map may be stale for a moment; a stale map can only send a write to the wrong
//! place, where the lease (here) or the database (the account row's epoch, the recorded
//! lease) refuses it. Without an ownership service the node owns every slot at a fixed
//! epoch (single-region mode).

pub mod drift;
pub mod lease;
pub mod sync;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ledger_wire::ownership::{OwnershipMap, SlotOwner};
use ledger_wire::AccountId;
use ownership_client::OwnershipClient;
use rand::seq::IndexedRandom;
use rand::Rng;
use tokio::sync::Notify;

pub use lease::{LeaseState, Refusal, Released};

/// The home of an account as this node currently sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub region: String,
    pub epoch: i64,
    pub is_local: bool,
}

/// Where a write for one account goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRoute {
    /// Write here at this epoch.
    Local { epoch: i64 },
    /// Forward to the home region.
    Remote { region: String },
    /// Home here, but no write may start now.
    Refused(Refusal),
}

#[derive(Debug)]
pub struct Ownership {
    region: String,
    slot_count: u32,
    /// Time a write needs before the lease runs out (the design's statement timeout +
    /// margin; the database enforces the lease at commit, so this is the node's early
    /// refusal, not the guarantee).
    write_margin: Duration,
    map: RwLock<Arc<OwnershipMap>>,
    lease: RwLock<LeaseState>,
    /// `(slot, epoch)` pairs the previous owner gave up (planned transfers of frozen
    /// slots), learned from the watch: no fencing delay for them.
    released: Mutex<Released>,
    /// The map version and the count of renewals recorded in the database so far: a
    /// switchover waits on it to know the database no longer lets frozen slots write.
    recorded: tokio::sync::watch::Sender<(u64, u64)>,
    /// Wakes the renewal loop when the map changed.
    pub(crate) renew_now: Notify,
    dynamic: bool,
    client: Option<Arc<OwnershipClient>>,
    /// The fencing rule's parameters (`None` in single-region mode: no fencing).
    timing: Option<sync::LeaseTiming>,
}

impl Ownership {
    /// Every slot owned by `region` at `epoch`, without expiry.
    pub fn static_all(region: impl Into<String>, slot_count: u32, epoch: i64) -> Self {
        let region = region.into();
        let epoch = u64::try_from(epoch).unwrap_or(1);
        let map = OwnershipMap {
            version: 1,
            epoch,
            slot_count,
            lease_ttl_ms: 0,
            regions: Vec::new(),
            slots: vec![
                SlotOwner {
                    region: region.clone(),
                    epoch,
                    frozen: false,
                };
                slot_count as usize
            ],
            overrides: Default::default(),
        };
        Ownership {
            region,
            slot_count,
            write_margin: Duration::ZERO,
            map: RwLock::new(Arc::new(map)),
            lease: RwLock::new(LeaseState::static_all(slot_count, epoch)),
            released: Mutex::new(Released::default()),
            recorded: tokio::sync::watch::Sender::new((0, 0)),
            renew_now: Notify::new(),
            dynamic: false,
            client: None,
            timing: None,
        }
    }

    /// Follows the ownership service: starts with `map` and no lease.
    pub fn dynamic(
        region: impl Into<String>,
        map: OwnershipMap,
        write_margin: Duration,
        timing: sync::LeaseTiming,
        client: Arc<OwnershipClient>,
    ) -> Self {
        let slot_count = map.slot_count;
        Ownership {
            region: region.into(),
            slot_count,
            write_margin,
            lease: RwLock::new(LeaseState::empty(slot_count)),
            map: RwLock::new(Arc::new(map)),
            released: Mutex::new(Released::default()),
            recorded: tokio::sync::watch::Sender::new((0, 0)),
            renew_now: Notify::new(),
            dynamic: true,
            client: Some(client),
            timing: Some(timing),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    /// How long this region waits after gaining a slot by promote before writing it
    /// (ttl * (1 + drift) + margin, with this node's settings and the map's ttl).
    pub fn fence_delay(&self) -> Option<Duration> {
        let ttl = Duration::from_millis(self.map().lease_ttl_ms);
        self.timing.map(|t| t.fence_delay(ttl))
    }

    pub fn map(&self) -> Arc<OwnershipMap> {
        self.map
            .read()
            .map_or_else(|p| p.into_inner().clone(), |m| m.clone())
    }

    /// Regions of the deployment other than this one.
    pub fn peers(&self) -> Vec<String> {
        self.map()
            .regions
            .iter()
            .map(|r| r.name.clone())
            .filter(|r| r != &self.region)
            .collect()
    }

    pub fn knows_region(&self, region: &str) -> bool {
        region == self.region || self.map().regions.iter().any(|r| r.name == region)
    }

    /// True when some region of this deployment could own the id's slot.
    pub fn slot_exists(&self, id: AccountId) -> bool {
        u32::from(id.slot()) < self.slot_count
    }

    /// The account's home, or `None` when its slot is outside this deployment.
    pub fn home_of(&self, id: AccountId) -> Option<Home> {
        if !self.slot_exists(id) {
            return None;
        }
        let map = self.map();
        let (region, epoch) = map.home_of(id)?;
        Some(Home {
            is_local: region == self.region,
            region: region.to_owned(),
            epoch: i64::try_from(epoch).ok()?,
        })
    }

    /// Where a write for `id` goes now.
    pub fn route_write(&self, id: AccountId) -> Option<WriteRoute> {
        let home = self.home_of(id)?;
        if !home.is_local {
            return Some(WriteRoute::Remote {
                region: home.region,
            });
        }
        let lease = self.lease.read().ok()?;
        let epoch = u64::try_from(home.epoch).ok()?;
        Some(match lease.may_write(id, epoch, self.write_margin) {
            Ok(epoch) => WriteRoute::Local {
                epoch: i64::try_from(epoch).ok()?,
            },
            Err(refusal) => {
                if refusal == Refusal::NotGranted {
                    self.renew_now.notify_one();
                }
                WriteRoute::Refused(refusal)
            }
        })
    }

    /// Whether this region may serve authoritative (strong) reads of `id` now.
    pub fn serves_strong_reads(&self, id: AccountId) -> bool {
        matches!(self.route_write(id), Some(WriteRoute::Local { .. }))
    }

    /// A slot this region may create accounts in now, with its epoch.
    pub fn pick_owned_slot(&self, rng: &mut impl Rng) -> Option<(u16, i64)> {
        let lease = self.lease.read().ok()?;
        if !self.dynamic {
            let slot = rng.random_range(0..self.slot_count);
            let epoch = self.map().epoch;
            return Some((u16::try_from(slot).ok()?, i64::try_from(epoch).ok()?));
        }
        let slots = lease.writable_slots(self.write_margin);
        let &(slot, epoch) = slots.choose(rng)?;
        Some((slot, i64::try_from(epoch).ok()?))
    }

    /// Whether the lease currently lets this region write at all (for readiness).
    pub fn lease_live(&self) -> bool {
        self.lease.read().is_ok_and(|l| {
            l.live(self.write_margin, std::time::Instant::now()) && l.held_slot_count() > 0
        })
    }

    /// Time left on the lease (`None`: static ownership, no expiry).
    pub fn lease_remaining(&self) -> Option<std::time::Duration> {
        self.lease
            .read()
            .ok()
            .and_then(|l| l.remaining(std::time::Instant::now()))
    }

    /// Slots in a fencing wait now, and the longest wait left.
    pub fn fenced(&self) -> (usize, std::time::Duration) {
        self.lease
            .read()
            .map_or((0, std::time::Duration::ZERO), |l| {
                l.fenced(std::time::Instant::now())
            })
    }

    /// Slots the last renewal granted (frozen or not).
    pub fn held_slot_count(&self) -> usize {
        self.lease.read().map_or(0, |l| l.held_slot_count())
    }

    pub(crate) fn lease(&self) -> &RwLock<LeaseState> {
        &self.lease
    }

    pub(crate) fn released(&self) -> &Mutex<Released> {
        &self.released
    }

    /// Notes that the previous owners of these slots and accounts gave them up (the
    /// failover tool saw them drained), and renews at once so the gain is usable.
    pub fn release(&self, slots: &[(u32, u64)], accounts: &[(AccountId, u64)]) {
        if let Ok(mut released) = self.released.lock() {
            released.slots.extend(slots.iter().copied());
            released.accounts.extend(accounts.iter().copied());
        }
        self.renew_now.notify_one();
    }

    /// Called after a renewal's grant at `map_version` was recorded in the database.
    pub(crate) fn note_recorded(&self, map_version: u64) {
        self.recorded.send_modify(|(version, count)| {
            *version = (*version).max(map_version);
            *count += 1;
        });
    }

    /// Waits until a renewal granted at map version `min_version` or later is recorded
    /// in the database. False when `timeout` passed first.
    pub async fn await_recorded(&self, min_version: u64, timeout: Duration) -> bool {
        let mut seen = self.recorded.subscribe();
        self.renew_now.notify_one();
        // A grant at `min_version` or later was computed after that change, so what it
        // recorded already reflects it.
        let reached = tokio::time::timeout(timeout, async {
            seen.wait_for(|(version, _)| *version >= min_version)
                .await
                .is_ok()
        })
        .await;
        matches!(reached, Ok(true))
    }

    /// Whether every slot and account named is held here at its epoch and usable now.
    pub fn usable(&self, slots: &[(u32, u64)], accounts: &[(AccountId, u64)]) -> bool {
        let Ok(lease) = self.lease.read() else {
            return false;
        };
        slots
            .iter()
            .all(|&(slot, epoch)| lease.slot_usable(slot, epoch))
            && accounts
                .iter()
                .all(|&(account, epoch)| lease.may_write(account, epoch, self.write_margin).is_ok())
    }

    /// Reads the map from the service now (after the database refused a write as not
    /// ours: this node's map is stale). Returns whether it changed.
    pub async fn refresh(&self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        match client.map().await {
            Ok(map) => {
                let changed = self.set_map(map);
                if changed {
                    self.renew_now.notify_one();
                }
                changed
            }
            Err(error) => {
                tracing::warn!(%error, "could not refresh the ownership map");
                false
            }
        }
    }

    /// Replaces the map if `map` is newer.
    pub(crate) fn set_map(&self, map: OwnershipMap) -> bool {
        let Ok(mut current) = self.map.write() else {
            return false;
        };
        if map.version <= current.version {
            return false;
        }
        *current = Arc::new(map);
        true
    }
}
