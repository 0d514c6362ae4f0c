//! `failover keys`: the public API's key file. Keys are made here, shown once, and
//! stored only as hashes; the same file goes to every region (nodes re-read it when it
//! changes), so a new key or a revocation takes effect everywhere without touching
//! the ledger. Writes replace the file atomically, so a node never reads half of one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ledger_wire::api_keys::{generate, KeyFile};

use crate::cli::KeysAction;

/// The key file of a `ledger-local` deployment.
pub const LOCAL_FILE: &str = "api-keys.json";

pub fn run(
    file: Option<&Path>,
    deployment: Option<&Path>,
    action: &KeysAction,
) -> anyhow::Result<()> {
    let path: PathBuf = match (file, deployment) {
        (Some(file), _) => file.to_owned(),
        (None, Some(dir)) => dir.join(LOCAL_FILE),
        (None, None) => anyhow::bail!("give --file (or LEDGER_API_KEYS_FILE) or --deployment"),
    };
    match action {
        KeysAction::New { tenant, scopes } => {
            anyhow::ensure!(
                !tenant.trim().is_empty(),
                "--tenant must name the key's owner"
            );
            let mut keys = read(&path, true)?;
            let scopes: BTreeSet<_> = scopes.iter().copied().collect();
            let (key, record) = generate(tenant, scopes, now());
            println!("{key}");
            eprintln!(
                "key {} for tenant {} ({}) added to {}; the key above is shown only now",
                record.id,
                record.tenant,
                scope_list(&record.scopes),
                path.display()
            );
            keys.keys.push(record);
            write(&path, &keys)
        }
        KeysAction::List => {
            let keys = read(&path, false)?;
            println!(
                "{:<14} {:<20} {:<12} {:<26} revoked",
                "id", "tenant", "scopes", "created"
            );
            for k in &keys.keys {
                println!(
                    "{:<14} {:<20} {:<12} {:<26} {}",
                    k.id,
                    k.tenant,
                    scope_list(&k.scopes),
                    k.created_at,
                    k.revoked_at.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        KeysAction::Revoke { id } => {
            let mut keys = read(&path, false)?;
            let record = keys
                .keys
                .iter_mut()
                .find(|k| &k.id == id)
                .with_context(|| format!("no key {id} in {}", path.display()))?;
            if record.revoked_at.is_some() {
                println!("key {id} was already revoked");
                return Ok(());
            }
            record.revoked_at = Some(now());
            write(&path, &keys)?;
            println!(
                "revoked key {id}; regions refuse it once they read {} again (within 2 s)",
                path.display()
            );
            Ok(())
        }
    }
}

fn scope_list(scopes: &BTreeSet<ledger_wire::api_keys::Scope>) -> String {
    scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn read(path: &Path, may_be_new: bool) -> anyhow::Result<KeyFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => KeyFile::parse(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("read the key file {}", path.display())),
        Err(e) if may_be_new && e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
        Err(e) => Err(e).with_context(|| format!("read the key file {}", path.display())),
    }
}

fn write(path: &Path, keys: &KeyFile) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(keys).context("encode the key file")?;
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, text).with_context(|| format!("write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("replace {}", path.display()))
}
