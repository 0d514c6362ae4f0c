#!/usr/bin/env bash
# Static checks of terraform/ (no terraform binary or provider can be downloaded here):
# python-hcl2 parses every file, scripts/terraform-check.py compares the variables the
# region module sets with each binary's --help and checks the latency records and their
# health checks (then shows each check failing on a planted violation), and checkov
# runs every check with each skip explained in place. Installs python-hcl2 and checkov
# once per machine into the tools cache. Needs the debug binaries (cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_DIR="${LEDGER_TOOLS_DIR:-$HOME/.cache/ledger-tools}"
VENV="$TOOLS_DIR/terraform-check-venv"
if [ ! -x "$VENV/bin/checkov" ] || ! "$VENV/bin/python" -c 'import hcl2' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q checkov python-hcl2
fi
BIN_DIR="${1:-target/debug}"
"$VENV/bin/python" scripts/terraform-check.py "$BIN_DIR"
"$VENV/bin/python" scripts/terraform-check.py "$BIN_DIR" --planted
"$VENV/bin/checkov" -d terraform --framework terraform --quiet --compact --skip-download
