//! Which slots this region may write, and at which epoch.
//!
//! Until the ownership service (openraft) is wired in, the node owns every slot by
//! configuration at one epoch. The write path already asks this module for every
//! write, and the database enforces the same leases (`ledger.slot_leases`), so
//! replacing the static map with the service's map changes no caller.

use ledger_wire::AccountId;
use rand::Rng;

/// The home of an account as this node currently sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub region: String,
    pub epoch: i64,
    pub is_local: bool,
}

#[derive(Debug, Clone)]
pub struct Ownership {
    region: String,
    slot_count: u32,
    epoch: i64,
}

impl Ownership {
    /// Every slot owned by `region` at `epoch`, without expiry.
    pub fn static_all(region: impl Into<String>, slot_count: u32, epoch: i64) -> Self {
        Ownership {
            region: region.into(),
            slot_count,
            epoch,
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// True when some region of this deployment could own the id's slot.
    pub fn slot_exists(&self, id: AccountId) -> bool {
        u32::from(id.slot()) < self.slot_count
    }

    /// The account's home, or `None` when its slot is outside this deployment.
    pub fn home_of(&self, id: AccountId) -> Option<Home> {
        self.slot_exists(id).then(|| Home {
            region: self.region.clone(),
            epoch: self.epoch,
            is_local: true,
        })
    }

    /// A slot this region owns, for a new account homed here.
    pub fn pick_owned_slot(&self, rng: &mut impl Rng) -> Option<(u16, i64)> {
        let slot = rng.random_range(0..self.slot_count);
        u16::try_from(slot).ok().map(|slot| (slot, self.epoch))
    }
}
