//! Where region data lives on disk.

use std::path::{Path, PathBuf};

use anyhow::Context;
use harness::dirs::{make_shared_dir, traversable_by_others};

/// Where region data really lives. PostgreSQL runs as the `postgres` user when we are
/// root, and cannot reach a data dir below a private home (e.g. /root, mode 700); then
/// the data goes to /var/tmp and `data_dir/regions` links to it.
pub fn storage_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    make_shared_dir(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().context("resolve data dir")?;
    let link = data_dir.join("regions");
    if link.exists() {
        return link.canonicalize().context("resolve region storage");
    }
    if !nix::unistd::Uid::effective().is_root() || traversable_by_others(&link) {
        make_shared_dir(&link)?;
        return Ok(link);
    }
    let hash = data_dir
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let real = PathBuf::from(format!("/var/tmp/ledger-local-{hash:016x}"));
    make_shared_dir(&real)?;
    std::os::unix::fs::symlink(&real, &link).context("link region storage")?;
    println!(
        "note: {} is not reachable by the postgres user; region data lives in {}",
        data_dir.display(),
        real.display()
    );
    Ok(real)
}
