#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a local deployment (a region
# with its own PostgreSQL and region node), runs a short scripted session against the
# HTTP API printing every request and answer, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
BIN=target/release
export LEDGER_LOCAL_DIR="${LEDGER_LOCAL_DIR:-$PWD/.local}"

"$BIN/ledger-local" down >/dev/null
trap '"$BIN/ledger-local" down' EXIT
"$BIN/ledger-local" up
API=http://127.0.0.1:7101

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# call METHOD PATH [IDEMPOTENCY-KEY] [JSON]: prints the request, the status, the
# regions named in the answer's headers, and the body.
call() {
  local method=$1 path=$2 key=${3:-} body=${4:-}
  local args=(-s -X "$method" -D "$tmp/headers" -o "$tmp/body" -w '%{http_code}')
  [ -n "$key" ] && args+=(-H "Idempotency-Key: $key")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  printf '\033[36m> %s %s\033[0m %s%s\n' "$method" "$path" "${key:+[Idempotency-Key: $key] }" "$body"
  status=$(curl "${args[@]}" "$API$path")
  served=$(grep -i '^x-served-by-region:' "$tmp/headers" | tr -d '\r' | cut -d' ' -f2 || true)
  home=$(grep -i '^x-home-region:' "$tmp/headers" | tr -d '\r' | cut -d' ' -f2 || true)
  replayed=$(grep -i '^idempotent-replayed:' "$tmp/headers" | tr -d '\r' | cut -d' ' -f2 || true)
  printf '\033[33m< %s\033[0m served by %s%s%s\n' "$status" "${served:-?}" "${home:+, home $home}" \
    "${replayed:+, replayed stored answer}"
  jq -C . "$tmp/body" 2>/dev/null || cat "$tmp/body"
}
field() { jq -r "$1" "$tmp/body"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; "$BIN/ledger-local" down' EXIT
run=$(date +%s)

bold "Open two EUR accounts (the id's 4 hex digits after ac_ are its ownership slot)"
call POST /v1/accounts "demo-$run-open-alice" '{"currency":"EUR"}'
alice=$(field .id)
call POST /v1/accounts "demo-$run-open-bob" '{"currency":"EUR"}'
bob=$(field .id)

bold "Deposit 100.00 into alice"
call POST "/v1/accounts/$alice/deposits" "demo-$run-dep-1" '{"amount":"100.00","reference":"salary"}'

bold "Withdraw 30.25 from alice"
call POST "/v1/accounts/$alice/withdrawals" "demo-$run-wd-1" '{"amount":"30.25"}'

bold "Try to withdraw 500.00: refused, nothing booked"
call POST "/v1/accounts/$alice/withdrawals" "demo-$run-wd-2" '{"amount":"500.00"}'

bold "Retry the deposit with the same Idempotency-Key: the stored answer, not a second deposit"
call POST "/v1/accounts/$alice/deposits" "demo-$run-dep-1" '{"amount":"100.00","reference":"salary"}'

bold "Same key, different amount: refused"
call POST "/v1/accounts/$alice/deposits" "demo-$run-dep-1" '{"amount":"99.00"}'

bold "Bad input: three decimals on EUR"
call POST "/v1/accounts/$alice/deposits" "demo-$run-dep-3" '{"amount":"1.005"}'

bold "Transfer 19.75 from alice to bob (same region: one transaction)"
call POST /v1/transfers "demo-$run-tr-1" "{\"from\":\"$alice\",\"to\":\"$bob\",\"amount\":\"19.75\"}"
transfer=$(field .id)
call GET "/v1/transfers/$transfer"

bold "Alice's account and a page of her ledger"
call GET "/v1/accounts/$alice"
call GET "/v1/accounts/$alice/ledger?limit=2"
cursor=$(field .next_cursor)
call GET "/v1/accounts/$alice/ledger?limit=2&cursor=$cursor"

bold "What the node counted"
curl -s "$API/metrics" | grep -E '^ledger_writes_total' || true

bold "Done: alice holds 50.00 (100.00 - 30.25 - 19.75), bob 19.75; stopping the deployment"
