#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a local deployment of three
# regions (each with its own PostgreSQL, broker, ownership voter, proxy, region
# node and replicator), runs a short scripted session against the HTTP API printing
# every request and answer and where it was served, then traffic from clients near each
# region, kills one region with SIGKILL, promotes, brings it back, fails back, runs two
# drills; then (as root) the same three regions under a simulated geography with a
# ledger-client next to each, losing the Raft leader's region; and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
BIN=target/release
export LEDGER_LOCAL_DIR="${LEDGER_LOCAL_DIR:-$PWD/.local}"

"$BIN/ledger-local" down >/dev/null
trap '"$BIN/ledger-local" down' EXIT
"$BIN/ledger-local" up --api-keys
# The deployment's API key (tenant local, read+write); `failover keys` makes more.
KEY=$(jq -r .api_key "$LEDGER_LOCAL_DIR/deployment.json")
AUTH="Authorization: Bearer $KEY"
EU=http://127.0.0.1:7101
US=http://127.0.0.1:7141
AP=http://127.0.0.1:7181
API=$EU

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# call METHOD PATH [IDEMPOTENCY-KEY] [JSON]: prints the request, the status, the
# regions named in the answer's headers, and the body.
call() {
  local method=$1 path=$2 key=${3:-} body=${4:-}
  local args=(-s -X "$method" -D "$tmp/headers" -o "$tmp/body" -w '%{http_code}' -H "${CALL_AUTH-$AUTH}")
  [ -n "$key" ] && args+=(-H "Idempotency-Key: $key")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  printf '\033[36m> %s %s\033[0m %s%s\n' "$method" "$path" "${key:+[Idempotency-Key: $key] }" "$body"
  status=$(curl "${args[@]}" "$API$path")
  forwarded=$(grep -i '^x-forwarded-to-region:' "$tmp/headers" | tr -d '\r' | cut -d' ' -f2 || true)
  served=$(grep -i '^x-served-by-region:' "$tmp/headers" | tr -d '\r' | cut -d' ' -f2 || true)
  home=$(grep -i '^x-home-region:' "$tmp/headers" | tr -d '\r' | cut -d' ' -f2 || true)
  replayed=$(grep -i '^idempotent-replayed:' "$tmp/headers" | tr -d '\r' | cut -d' ' -f2 || true)
  printf '\033[33m< %s\033[0m served by %s%s%s%s\n' "$status" "${served:-?}" "${home:+, home $home}" \
    "${forwarded:+, forwarded to $forwarded}" "${replayed:+, replayed stored answer}"
  jq -C . "$tmp/body" 2>/dev/null || cat "$tmp/body"
}
field() { jq -r "$1" "$tmp/body"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; "$BIN/ledger-local" down' EXIT
run=$(date +%s)

bold "Without an API key: refused (401), nothing booked"
CALL_AUTH="X-No-Key: 1" call POST /v1/accounts "demo-$run-open-nokey" '{"currency":"EUR"}'

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

bold "Asked at eu-west, open carol homed in us-east: forwarded to her home"
call POST /v1/accounts "demo-$run-open-carol" '{"currency":"EUR","home_region":"us-east"}'
carol=$(field .id)

bold "Deposit 5.00 into carol, sent to ap-south: forwarded to us-east, ack=replicated (answered once another region holds a copy)"
API=$AP
curl -s -D "$tmp/h" -o "$tmp/body" -X POST "$AP/v1/accounts/$carol/deposits" -H "$AUTH" -H "Idempotency-Key: demo-$run-dep-c" \
  -H 'ack: replicated' -H 'Content-Type: application/json' -d '{"amount":"5.00"}' >/dev/null
grep -iE '^(x-served-by-region|x-home-region|x-forwarded-to-region):' "$tmp/h" | tr -d '\r'
jq -C . "$tmp/body"

bold "Cross-region transfer alice (eu-west) -> carol (us-east): a saga, debited first"
API=$EU
call POST /v1/transfers "demo-$run-tr-2" "{\"from\":\"$alice\",\"to\":\"$carol\",\"amount\":\"10.00\"}"
saga=$(field .id)
for _ in $(seq 1 50); do
  state=$(curl -s -H "$AUTH" "$AP/v1/transfers/$saga" | jq -r .state)
  [ "$state" = completed ] && break
  sleep 0.1
done
API=$AP
call GET "/v1/transfers/$saga"

bold "Carol read at ap-south: local copy with its staleness, then strong (at her home)"
call GET "/v1/accounts/$carol"
call GET "/v1/accounts/$carol?consistency=strong"
API=$EU

bold "Alice's account and a page of her ledger"
call GET "/v1/accounts/$alice"
call GET "/v1/accounts/$alice/ledger?limit=2"
cursor=$(field .next_cursor)
call GET "/v1/accounts/$alice/ledger?limit=2&cursor=$cursor"

bold "A read-only key for an auditor (failover keys new): it reads in every region, and may not write (403)"
AUDITOR=$("$BIN/failover" --deployment "$LEDGER_LOCAL_DIR" keys new --tenant auditor --scopes read)
for _ in $(seq 1 50); do  # every node re-reads the key file within 2 s
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $AUDITOR" "$AP/v1/accounts/$alice")" = 200 ] && break
  sleep 0.1
done
CALL_AUTH="Authorization: Bearer $AUDITOR" call GET "/v1/accounts/$alice"
CALL_AUTH="Authorization: Bearer $AUDITOR" call POST "/v1/accounts/$alice/deposits" "demo-$run-dep-aud" '{"amount":"1.00"}'

bold "What the node counted"
curl -s "$API/metrics" | grep -E '^ledger_writes_total' || true

bold "Traffic from clients near each region, then ap-south is killed"
"$BIN/ledger-local" traffic --seconds "${DEMO_SECONDS:-10}" --rate 20

FAILOVER=("$BIN/failover" --deployment "$LEDGER_LOCAL_DIR")
bold "Failover: promote ap-south's slots to the survivors once its lease has run out"
"${FAILOVER[@]}" promote --region ap-south --wait-s 30
"${FAILOVER[@]}" status

bold "ap-south comes back deposed: it publishes its unpublished tail, the new homes reconcile it"
"$BIN/ledger-local" restart ap-south
bold "Failback: a switchover back once ap-south is healthy and reconciled (RPO 0)"
"${FAILOVER[@]}" failback --region ap-south --wait-s 60
"${FAILOVER[@]}" reconcile

bold "A drill: planned switchover of eu-west to us-east under load, with a report"
"${FAILOVER[@]}" drill --scenario switchover --region eu-west --to us-east --rate 50 \
  --warmup-s 2 --observe-s 2 --report-dir "$LEDGER_LOCAL_DIR/drill"

bold "The bank drill: transfers only, two kill/promote/restart/failback cycles, checked to the cent"
"${FAILOVER[@]}" drill --scenario kill-cycles --region ap-south,eu-west --cycles 2 \
  --workload transfers --rate 40 --warmup-s 2 --observe-s 2 --down-for-s 1 \
  --kill-cmd "$BIN/ledger-local --data-dir $LEDGER_LOCAL_DIR kill {region} --unpublished-tail-ms 1000" \
  --report-dir "$LEDGER_LOCAL_DIR/bank-drill"

bold "Done with the local deployment: alice holds 40.00 (100.00 - 30.25 - 19.75 - 10.00) before the traffic; stopping it"
"$BIN/ledger-local" down

bold "Clients around the world: three regions 70-190 ms apart (network namespaces), ledger-client next to each, the Raft leader's region lost halfway"
if [ "$(id -u)" -eq 0 ]; then
  GEO_DIR="$LEDGER_LOCAL_DIR-geo"
  trap 'rm -rf "$tmp"; "$BIN/ledger-local" --data-dir "$GEO_DIR" down; "$BIN/ledger-local" down' EXIT
  "$BIN/ledger-local" --data-dir "$GEO_DIR" down >/dev/null
  "$BIN/ledger-local" --data-dir "$GEO_DIR" up --geo
  "$BIN/ledger-local" --data-dir "$GEO_DIR" locations --seconds "${DEMO_SECONDS:-20}" --rate 10 --kill leader
  echo "(ours against a primary with a streaming standby under the same geography: a fresh \`ledger-local up --geo\`, then active-passive-bench; see the README)"
else
  echo "skipped: the simulated geography needs network namespaces (run as root)"
fi
