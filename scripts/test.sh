#!/usr/bin/env bash
# The test command: installs what is missing, then checks formatting and lints and runs
# every test. Tests start their own PostgreSQL clusters (own ports, temp dirs), so no
# database needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --deps
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
# Real-process tests start every service binary (the failover tool included), not only
# those of their own package.
echo "[test] cargo build --bins"
cargo build --locked --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  echo "[test] cargo nextest"
  cargo nextest run --locked --workspace --profile ci
else
  echo "[test] cargo test (install cargo-nextest for per-test processes and timeouts)"
  cargo test --locked --workspace
fi
