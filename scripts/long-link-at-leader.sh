#!/usr/bin/env bash
# Measures what a long link at the Raft leader's region costs the other regions:
# three regions in network namespaces, one account homed in each, deposits at each
# home in three phases (before, while the leader's region is 100 ± 20 ms away on every
# link, after the heal), and per phase and region how many were acknowledged and why
# the others were refused. Voter timings come from the environment
# (OWNERSHIP_HEARTBEAT_MS, OWNERSHIP_ELECTION_MIN_MS, OWNERSHIP_ELECTION_MAX_MS).
#
#   scripts/long-link-at-leader.sh [seconds-of-fault]     (root; release binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
FAULT_SECONDS="${1:-15}"
BIN="${BIN_DIR:-target/release}"
DIR=$(mktemp -d /tmp/long-link.XXXXXX)
# Port block below the tests' (20000-32000), so a test run beside this never collides.
LL=("$BIN/ledger-local" --data-dir "$DIR")
trap '"${LL[@]}" down >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
"${LL[@]}" up --namespaces --base-port 7500 > "$DIR/up.log" 2>&1 || { tail -5 "$DIR/up.log"; exit 1; }

declare -A api accounts
while read -r name url; do api[$name]=$url; done < <(jq -r '.regions[] | "\(.name) \(.api_url)"' "$DIR/deployment.json")
for region in "${!api[@]}"; do
  accounts[$region]=$(curl -sf -X POST "${api[$region]}/v1/accounts" -H 'content-type: application/json' \
    -H "idempotency-key: $(cat /proc/sys/kernel/random/uuid)" \
    -d "{\"currency\":\"EUR\",\"home_region\":\"$region\"}" | jq -r .id)
done

phase() { # seconds, label
  local end=$(( $(date +%s) + $1 ))
  declare -A ok=() refused=()
  while [ "$(date +%s)" -lt "$end" ]; do
    for region in "${!api[@]}"; do
      status=$(curl -s -o "$DIR/body" -w '%{http_code}' -m 5 -X POST \
        "${api[$region]}/v1/accounts/${accounts[$region]}/deposits" -H 'content-type: application/json' \
        -H "idempotency-key: $(cat /proc/sys/kernel/random/uuid)" -d '{"amount":"1.00"}' || true)
      if [ "$status" = 201 ]; then ok[$region]=$(( ${ok[$region]:-0} + 1 ));
      else refused[$region]=$(( ${refused[$region]:-0} + 1 ))
        echo "$2|$region|$status $(jq -r '.detail // empty' "$DIR/body" 2>/dev/null)" >> "$DIR/refusals"; fi
    done
  done
  for region in "${!api[@]}"; do
    printf '%-34s %-9s %4d acknowledged %4d refused\n' "$2" "$region" "${ok[$region]:-0}" "${refused[$region]:-0}"
  done
}

phase 5 "before"
"${LL[@]}" delay leader --ms 100 --jitter-ms 20 --seed 1
phase "$FAULT_SECONDS" "leader's region 100 ± 20 ms away"
"${LL[@]}" heal > /dev/null
phase 5 "after the heal"
if [ -s "$DIR/refusals" ]; then
  echo "refusals (phase | region | status detail):"
  sort "$DIR/refusals" | uniq -c | sort -rn
fi
