//! API keys of the public API: the key format clients send as `Authorization: Bearer`,
//! and the key file every region node reads (only hashes, never keys). The file is
//! configuration shipped to every region (a deployment secret, like the internal
//! secret), not replicated ledger data: a key must work in a region cut off from the
//! others, and a revocation must not wait behind replication lag or a dead region.
//! `failover keys` writes the file; region nodes read it and notice changes.

use std::collections::BTreeSet;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every key starts with this, so leaked keys are easy to find in logs and scanners.
pub const KEY_PREFIX: &str = "lk_";
/// Hex characters of a key's public id.
const ID_LEN: usize = 12;
/// Hex characters of a key's secret part (256 bits).
const SECRET_LEN: usize = 64;

/// What a key may do: `read` the GET routes, `write` the routes that move money or
/// open accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            other => Err(format!("{other:?} is not a scope (read, write)")),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Write => "write",
        })
    }
}

/// One key as the file stores it: its public id, tenant and scopes, and the SHA-256
/// of the whole key (the key has 256 random bits, so a fast hash is enough).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub scopes: BTreeSet<Scope>,
    pub sha256: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl KeyRecord {
    /// Whether `key` (as a client sent it) is this record's key and still valid.
    pub fn matches(&self, key: &str) -> bool {
        self.revoked_at.is_none() && constant_time_eq(&hash(key), &self.sha256)
    }
}

/// The key file: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub keys: Vec<KeyRecord>,
}

impl KeyFile {
    pub fn parse(text: &str) -> Result<KeyFile, String> {
        let file: KeyFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut ids = BTreeSet::new();
        for key in &file.keys {
            if !ids.insert(key.id.as_str()) {
                return Err(format!("key id {} appears twice", key.id));
            }
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("key {} has no SHA-256 hex digest", key.id));
            }
            if key.scopes.is_empty() {
                return Err(format!("key {} has no scope", key.id));
            }
        }
        Ok(file)
    }

    /// The record of the key id `key` names, if any.
    pub fn find(&self, key: &str) -> Option<&KeyRecord> {
        let id = key_id(key)?;
        self.keys.iter().find(|k| k.id == id)
    }
}

/// A new key for `tenant`: the key to hand to the client (shown once) and its record.
pub fn generate(tenant: &str, scopes: BTreeSet<Scope>, created_at: String) -> (String, KeyRecord) {
    let mut bytes = [0u8; ID_LEN / 2 + SECRET_LEN / 2];
    rand::rng().fill_bytes(&mut bytes);
    let (id, secret) = bytes.split_at(ID_LEN / 2);
    let id = hex::encode(id);
    let key = format!("{KEY_PREFIX}{id}_{}", hex::encode(secret));
    let record = KeyRecord {
        id,
        tenant: tenant.to_owned(),
        scopes,
        sha256: hash(&key),
        created_at,
        revoked_at: None,
    };
    (key, record)
}

/// The public id a well-formed key carries (`lk_<id>_<secret>`).
pub fn key_id(key: &str) -> Option<&str> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, ID_LEN) && hex(secret, SECRET_LEN)).then_some(id)
}

/// Hex SHA-256 of a key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[Scope]) -> BTreeSet<Scope> {
        list.iter().copied().collect()
    }

    #[test]
    fn a_generated_key_matches_only_its_record_until_revoked() {
        let (key, mut record) = generate("acme", scopes(&[Scope::Read]), "now".into());
        assert!(key.starts_with(KEY_PREFIX));
        assert_eq!(key_id(&key), Some(record.id.as_str()));
        assert!(record.matches(&key));
        let (other, _) = generate("acme", scopes(&[Scope::Read]), "now".into());
        assert!(!record.matches(&other));
        let mut forged = key.clone();
        forged.pop();
        forged.push(if key.ends_with('0') { '1' } else { '0' });
        assert!(!record.matches(&forged));
        record.revoked_at = Some("later".into());
        assert!(!record.matches(&key));
    }

    #[test]
    fn the_file_holds_hashes_and_refuses_duplicates_and_empty_scopes() {
        let (key, record) = generate("acme", scopes(&[Scope::Read, Scope::Write]), "t".into());
        let file = KeyFile {
            keys: vec![record.clone()],
        };
        let text = serde_json::to_string(&file).expect("json");
        assert!(
            !text.contains(&key[KEY_PREFIX.len() + ID_LEN + 1..]),
            "the secret is stored"
        );
        let parsed = KeyFile::parse(&text).expect("parse");
        assert_eq!(parsed.find(&key), Some(&record));
        assert_eq!(parsed.find("lk_nonsense"), None);
        let twice = KeyFile {
            keys: vec![record.clone(), record.clone()],
        };
        assert!(KeyFile::parse(&serde_json::to_string(&twice).expect("json")).is_err());
        let mut scopeless = record;
        scopeless.scopes.clear();
        let text = serde_json::to_string(&KeyFile {
            keys: vec![scopeless],
        })
        .expect("json");
        assert!(KeyFile::parse(&text).is_err());
    }
}
