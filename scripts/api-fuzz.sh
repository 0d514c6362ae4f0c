#!/usr/bin/env bash
# Fuzzes the public API against its own OpenAPI document with schemathesis (PyPI,
# installed once per machine into the tools cache): starts two regions (debug build,
# ports from $BASE_PORT, default 7500, outside the tests' 20000-32000), runs every check
# (scripts/api-fuzz/schemathesis.toml says which 422s the money-moving writes may answer,
# hooks.py gives each call its own Idempotency-Key), stops them; exits non-zero on any
# failure. The regions run behind API keys (`up --api-keys`) and every call carries the
# deployment's key, so the documented 401/403/429 and the bearer scheme are checked too
# (schemathesis's ignored_auth check sends calls without it). scripts/test.sh runs it
# with a fixed seed.
#
#   scripts/api-fuzz.sh [extra schemathesis arguments, e.g. --seed N]
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_DIR="${LEDGER_TOOLS_DIR:-$HOME/.cache/ledger-tools}"
VENV="$TOOLS_DIR/schemathesis-venv"
BASE_PORT="${BASE_PORT:-7500}"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis
fi
cargo build -q --workspace --bins
DATA_DIR="$(mktemp -d /tmp/ledger-api-fuzz.XXXXXX)"
trap 'target/debug/ledger-local --data-dir "$DATA_DIR" down >/dev/null 2>&1 || true; rm -rf "$DATA_DIR"' EXIT
target/debug/ledger-local --data-dir "$DATA_DIR" up --regions 2 --base-port "$BASE_PORT" --api-keys >/dev/null
LEDGER_API_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$DATA_DIR/deployment.json")
export LEDGER_API_KEY
SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$PWD/scripts/api-fuzz" "$VENV/bin/schemathesis" \
  --config-file scripts/api-fuzz/schemathesis.toml run "http://127.0.0.1:$((BASE_PORT + 1))/openapi.json" \
  --checks all --max-examples 30 "$@"
