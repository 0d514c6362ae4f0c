#!/usr/bin/env bash
# Fuzzes the public API against its own OpenAPI document with schemathesis (PyPI,
# installed once per machine into the tools cache): starts two regions (debug build,
# ports from $BASE_PORT, default 7500, outside the tests' 20000-32000), runs every check,
# stops them. Not part of scripts/test.sh yet: it still reports failures (issue 16).
#
#   scripts/api-fuzz.sh [extra schemathesis arguments]
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
target/debug/ledger-local --data-dir "$DATA_DIR" up --regions 2 --base-port "$BASE_PORT" >/dev/null
"$VENV/bin/schemathesis" run "http://127.0.0.1:$((BASE_PORT + 1))/openapi.json" \
  --checks all --max-examples 30 "$@"
