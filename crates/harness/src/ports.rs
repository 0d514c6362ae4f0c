//! Ports for test processes that run side by side: picked at random below the kernel's
//! ephemeral range, and *claimed* across processes before use.
//!
//! A bind check alone is not enough: nextest runs tests as separate processes, two of
//! them could pick the same port before either child bound it, and a readiness probe
//! then reached the other test's server (seen: two replication tests shared one
//! region's PostgreSQL, "A has 815 rows, B 1630"). A claim is an exclusive `flock` on
//! a file per port (or per block) in a directory shared by every test process, held
//! until the process exits, so the kernel releases it even after a SIGKILL.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use rand::Rng;

use crate::{io_context, HarnessError};

/// Ports [`free_port`] picks from: below the kernel's ephemeral range (32768 and up),
/// where an outgoing connection of any process could take a port between our check
/// and a child's bind, and apart from [`BLOCK_PORTS`].
pub const FREE_PORTS: Range<u16> = 10_000..20_000;

/// Where [`free_block`] puts whole deployments (20000-31999), in aligned blocks.
pub const BLOCK_PORTS: Range<u16> = 20_000..32_000;

/// Claims held by this process (released by the kernel when it exits).
static CLAIMS: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());

fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("ledger-port-claims")
}

/// Takes the claim `name` for this process: false when another process holds it.
fn claim(name: &str) -> Result<bool, HarnessError> {
    let dir = claims_dir();
    std::fs::create_dir_all(&dir).map_err(io_context(format!("make {}", dir.display())))?;
    let path = dir.join(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_context(format!("open {}", path.display())))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            CLAIMS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(lock);
            Ok(true)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(false),
        Err((_, errno)) => Err(io_context(format!("lock {}", path.display()))(
            std::io::Error::from(errno),
        )),
    }
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A TCP port of [`FREE_PORTS`] claimed by this process and free on 127.0.0.1 a moment
/// ago (a port another program binds in between is still possible: callers that bind
/// it later retry on a clash).
pub fn free_port() -> Result<u16, HarnessError> {
    let mut rng = rand::rng();
    for _ in 0..500 {
        let port = rng.random_range(FREE_PORTS);
        if claim(&format!("port-{port}"))? && bindable(port) {
            return Ok(port);
        }
    }
    Err(io_context("find a free port below the ephemeral range")(
        std::io::Error::other("500 ports tried: all claimed or bound"),
    ))
}

/// The first port of a block of `len` consecutive ports in [`BLOCK_PORTS`], claimed by
/// this process and all free a moment ago. Blocks are aligned to `len` rounded up to a
/// hundred, so two claims never overlap.
pub fn free_block(len: u16) -> Result<u16, HarnessError> {
    let stride = len.div_ceil(100).max(1) * 100;
    let blocks = (BLOCK_PORTS.end - BLOCK_PORTS.start) / stride;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let base = BLOCK_PORTS.start + rng.random_range(0..blocks) * stride;
        if claim(&format!("block-{stride}-{base}"))? && (base..base + len).all(bindable) {
            return Ok(base);
        }
    }
    Err(io_context(format!("find {len} free ports in a row"))(
        std::io::Error::other("200 blocks tried: all claimed or bound"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_exclusive_across_processes() {
        // flock locks belong to the open file description: a second open of the same
        // file, as another process would make, cannot take it while the first holds it.
        let name = format!("test-{}", std::process::id());
        assert!(claim(&name).expect("claim"));
        let again = File::options()
            .write(true)
            .open(claims_dir().join(&name))
            .expect("open");
        assert!(Flock::lock(again, FlockArg::LockExclusiveNonblock).is_err());
    }

    #[test]
    fn blocks_are_aligned_and_inside_the_range() {
        let base = free_block(130).expect("block");
        assert_eq!(base % 200, 0);
        assert!(BLOCK_PORTS.contains(&base) && BLOCK_PORTS.contains(&(base + 129)));
    }
}
