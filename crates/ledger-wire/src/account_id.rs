//! Account ids that carry their ownership slot, so any region routes any id without a lookup.
//!
//! An id is a non-negative 63-bit integer: the top 15 bits are the slot, the low 48
//! bits are chosen at random by the creating region. Its text form is
//! `ac_SSSS_LLLLLLLLLLLL` (lower-case hex), which keeps the slot visible to humans
//! and stays a string in JSON (JavaScript clients lose precision above 2^53).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest slot count a cluster may be created with (15 bits of the id).
pub const MAX_SLOTS: u32 = 1 << 15;
const LOCAL_BITS: u32 = 48;
const LOCAL_MASK: u64 = (1 << LOCAL_BITS) - 1;
const PREFIX: &str = "ac_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountIdError {
    #[error("account id must look like ac_0a3f_00d1e2f3a4b5 (ac_, 4 hex digits of slot, _, 12 hex digits)")]
    Malformed,
    #[error("slot {0} is out of range (at most {max})", max = MAX_SLOTS - 1)]
    SlotOutOfRange(u32),
}

impl AccountId {
    /// Builds an id from its slot and the region-chosen local part (low 48 bits are kept).
    pub fn new(slot: u16, local: u64) -> Result<Self, AccountIdError> {
        if u32::from(slot) >= MAX_SLOTS {
            return Err(AccountIdError::SlotOutOfRange(u32::from(slot)));
        }
        let raw = (u64::from(slot) << LOCAL_BITS) | (local & LOCAL_MASK);
        // slot < 2^15 keeps bit 63 clear, so the value fits a non-negative i64.
        i64::try_from(raw)
            .map(AccountId)
            .map_err(|_| AccountIdError::Malformed)
    }

    /// Interprets a database value; refuses negative numbers, which no id can be.
    pub fn from_i64(raw: i64) -> Result<Self, AccountIdError> {
        if raw < 0 {
            return Err(AccountIdError::Malformed);
        }
        Ok(AccountId(raw))
    }

    pub fn as_i64(self) -> i64 {
        self.0
    }

    pub fn slot(self) -> u16 {
        // The shift leaves at most 15 bits, so the narrowing cannot truncate.
        (self.0 as u64 >> LOCAL_BITS) as u16
    }

    pub fn local(self) -> u64 {
        self.0 as u64 & LOCAL_MASK
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{:04x}_{:012x}", self.slot(), self.local())
    }
}

impl FromStr for AccountId {
    type Err = AccountIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(PREFIX).ok_or(AccountIdError::Malformed)?;
        let (slot_hex, local_hex) = rest.split_once('_').ok_or(AccountIdError::Malformed)?;
        let is_hex = |part: &str, len: usize| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !is_hex(slot_hex, 4) || !is_hex(local_hex, 12) {
            return Err(AccountIdError::Malformed);
        }
        let slot = u32::from_str_radix(slot_hex, 16).map_err(|_| AccountIdError::Malformed)?;
        let local = u64::from_str_radix(local_hex, 16).map_err(|_| AccountIdError::Malformed)?;
        let slot = u16::try_from(slot).map_err(|_| AccountIdError::SlotOutOfRange(slot))?;
        AccountId::new(slot, local)
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for AccountId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^ac_[0-9a-f]{4}_[0-9a-f]{12}$"))
            .description(Some(
                "Account id; the 4 hex digits after `ac_` are the ownership slot.",
            ))
            .examples([serde_json::json!("ac_0a3f_00d1e2f3a4b5")])
            .into()
    }
}

impl utoipa::ToSchema for AccountId {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form_is_stable() {
        let id = AccountId::new(0x0a3f, 0xd1e2f3a4b5).expect("valid");
        assert_eq!(id.to_string(), "ac_0a3f_00d1e2f3a4b5");
        assert_eq!("ac_0a3f_00d1e2f3a4b5".parse::<AccountId>(), Ok(id));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "ac_",
            "ac_0a3f00d1e2f3a4b5",
            "AC_0a3f_00d1e2f3a4b5",
            "ac_0A3F_00d1e2f3a4b5",
            "ac_0a3f_00d1e2f3a4b",
            "ac_0a3f_00d1e2f3a4b5x",
            "ac_+a3f_00d1e2f3a4b5",
        ] {
            assert_eq!(
                bad.parse::<AccountId>(),
                Err(AccountIdError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            "ac_8000_000000000001".parse::<AccountId>(),
            Err(AccountIdError::SlotOutOfRange(0x8000))
        );
    }

    proptest! {
        #[test]
        fn round_trips(slot in 0u16..(MAX_SLOTS as u16), local in 0u64..(1 << 48)) {
            let id = AccountId::new(slot, local).expect("in range");
            prop_assert_eq!(id.slot(), slot);
            prop_assert_eq!(id.local(), local);
            prop_assert!(id.as_i64() >= 0);
            prop_assert_eq!(id.to_string().parse::<AccountId>(), Ok(id));
            prop_assert_eq!(AccountId::from_i64(id.as_i64()), Ok(id));
        }
    }
}
