#!/usr/bin/env bash
# Installs what the ledger needs on a fresh Debian machine and builds it.
# Re-runnable: every step is skipped when its result is already there.
#
#   scripts/setup.sh            # system packages + release build of the binaries
#   scripts/setup.sh --deps     # system packages and the pinned broker only (the test
#                               # command builds the workspace itself)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- system packages (Debian) ---------------------------------------------------------
missing=()
pg_server=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_server" ] || ! id postgres >/dev/null 2>&1; then missing+=(postgresql postgresql-contrib); fi
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
# Regions in network namespaces (the partition tests): `ip` and `iptables`.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
# Clock-rate drift of a node (the clock-drift fault): libfaketime.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing+=(faketime)
# rdkafka builds librdkafka from source (its cmake-build feature).
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# promtool (the alert rules' unit tests): Debian ships it with the prometheus package.
# The same package's server backs `ledger-local up --monitoring` and its test.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# schemathesis (the API fuzzing in scripts/api-fuzz.sh) goes into a Python venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# Headless Chromium renders the drill report in a test (a screenshot is checked).
[ -x /usr/bin/chromium ] || missing+=(chromium)
for pkg in libcurl4-openssl-dev libssl-dev zlib1g-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "Debian packages present (PostgreSQL at ${pg_server%/postgres})"
fi

# --- Rust toolchain -----------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "cargo not found: install Rust 1.85 or newer (rustup) and run this again" >&2
    exit 1
  fi
fi
log "$(cargo --version)"

# --- the Kafka-protocol broker (Tansu, or nisshi with LEDGER_BROKER=nisshi; pinned) ---
# Installed once per machine into a cache outside the clone (fresh clones and CI reuse
# it); the harness and the launcher look for it at the same path
# (harness::broker::BrokerKind). nisshi is Tansu's successor under a new name: same
# command line and storage; not the default, it did not replicate faster here
# (ARCHITECTURE.md, "Performance", "Tansu or nisshi").
BROKER="${LEDGER_BROKER:-tansu}"
BROKER_VERSION=0.6.0
case "$BROKER" in
  nisshi) BROKER_FEATURES=postgres,libsql ;;
  tansu) BROKER_FEATURES=postgres,dynostore,libsql ;;
  *) echo "LEDGER_BROKER must be nisshi or tansu, not $BROKER" >&2; exit 1 ;;
esac
TOOLS_DIR="${LEDGER_TOOLS_DIR:-$HOME/.cache/ledger-tools}"
BROKER_ROOT="$TOOLS_DIR/$BROKER-$BROKER_VERSION"
if [ -x "$BROKER_ROOT/bin/$BROKER" ]; then
  log "$BROKER $BROKER_VERSION present at $BROKER_ROOT/bin/$BROKER"
else
  log "building $BROKER $BROKER_VERSION from crates.io into $BROKER_ROOT (8-20 minutes, once per machine)"
  mkdir -p "$TOOLS_DIR"
  staging="$TOOLS_DIR/.$BROKER-$BROKER_VERSION.partial"
  rm -rf "$staging"
  cargo install "$BROKER" --version "$BROKER_VERSION" --locked \
    --features "$BROKER_FEATURES" --root "$staging"
  rm -rf "$BROKER_ROOT"
  mv "$staging" "$BROKER_ROOT"
  log "$BROKER installed: $("$BROKER_ROOT/bin/$BROKER" --version)"
fi

if [ "${1:-}" = "--deps" ]; then
  exit 0
fi

# --- build ---------------------------------------------------------------------------
log "building release binaries (first build takes a few minutes)"
cargo build --release --locked --workspace --bins
log "binaries in target/release: region-node, ledger-replicator, ownership-server, ledger-local, benches"
