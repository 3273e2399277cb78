#!/usr/bin/env bash
# Before/after: two builds of spocgw, the full pipeline, in one run. Usage:
#   bench/before-after.sh BEFORE_DIR AFTER_DIR   (each holding release spocgw and spocgw-load)
# The BEFORE build writes the development PKI and configuration; both gateways run it (each on
# ports and an audit directory of its own) in front of one simulated Ministry, and the same load
# generator (AFTER's) drives them alternately, ROUNDS times per scenario, best round kept:
#   ka3k    keep-alive, 3 KB CheckIdentityRequest, CONC connections
#   ka50k   keep-alive, 50 KB VerifyFingerprintRequest, CONC connections
#   newconn a new mutual-TLS connection per request, 16 at once
#   idle    resident memory per idle connection (IDLE opened, held; IDLE=0 skips it)
# SCENARIOS picks among the first three (all by default).
# Prints a Markdown table of req/s, p99 and after/before ratios.
set -euo pipefail
OLD=${1:?before dir}; NEW=${2:?after dir}
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-3}; CONC=${CONC:-32}; IDLE=${IDLE:-1000}
SCENARIOS=${SCENARIOS:-ka3k ka50k newconn}
W=$(mktemp -d /tmp/spocgw-before-after.XXXXXX)
L=$NEW/spocgw-load
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
GP=$(port); GC=$(port); GA=$(port); MP=$(port); RP=$(port); NP=$(port); NC=$(port); NA=$(port)
"$OLD/spocgw" dev-pki --out "$W/pki" --gateway-port "$GP" --callback-port "$GC" --admin-port "$GA" \
  --ministry-port "$MP" --receiver-port "$RP" >/dev/null
P=$W/pki
# One terminal sends every request: lift its rates and connection shares.
sed -i -E 's/^(per_second|burst) *=.*/\1 = 100000000/' "$P/policies/routes.toml"
sed -i -E 's#^crls = \["ca/police-ca.crl.pem"\]$#&\nmax_connections_per_source = 8192\nmax_connections_per_client = 8192#' "$P/gateway.toml"
sed -e "s/127.0.0.1:$GP\"/127.0.0.1:$NP\"/" -e "s/127.0.0.1:$GC\"/127.0.0.1:$NC\"/" -e "s/127.0.0.1:$GA\"/127.0.0.1:$NA\"/" \
  -e 's#^dir = "audit"#dir = "audit-after"#' "$P/gateway.toml" > "$P/gateway-after.toml"
"$NEW/spocgw" sim ministry --config "$P/ministry.toml" 2>"$W/ministry.log" & PIDS+=($!)
"$OLD/spocgw" serve --config "$P/gateway.toml" 2>/dev/null & PIDS+=($!); BEFORE_PID=$!
"$NEW/spocgw" serve --config "$P/gateway-after.toml" 2>/dev/null & PIDS+=($!); AFTER_PID=$!
for a in "$GA" "$NA"; do
  for _ in $(seq 150); do curl -sf "http://127.0.0.1:$a/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$a/readyz" >/dev/null || { echo "gateway on admin port $a not ready" >&2; exit 1; }
done
url() { case $1 in before) echo "https://127.0.0.1:$GP";; after) echo "https://127.0.0.1:$NP";; esac; }
pid() { case $1 in before) echo "$BEFORE_PID";; after) echo "$AFTER_PID";; esac; }
CREDS=(--ca "$P/ca/police-ca.pem" --cert "$P/clients/officer.pem" --key "$P/clients/officer.key")
field() { sed -E "s/.*$1=([^ ]+).*/\1/" <<<"$2"; }
rss() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
declare -A RPS P99
scenario() { local name=$1; shift
  for t in before after; do RPS[$name/$t]=0; P99[$name/$t]=0; done
  for r in $(seq "$ROUNDS"); do
    for t in before after; do
      local line; line=$("$L" --url "$(url $t)" "${CREDS[@]}" --duration "$DUR" "$@" 2>>"$W/load.err" || echo "req_per_s=0 p99_ms=0")
      echo "  $name round $r $t: $line" >&2
      local v; v=$(field req_per_s "$line")
      if awk -v a="$v" -v b="${RPS[$name/$t]}" 'BEGIN{exit !(a>b)}'; then RPS[$name/$t]=$v; P99[$name/$t]=$(field p99_ms "$line"); fi
    done
  done
}
declare -A IDLEKB
for t in before after; do
  [ "$IDLE" -gt 0 ] || { IDLEKB[$t]=0; continue; }
  b=$(rss "$(pid $t)")
  "$L" --url "$(url $t)" "${CREDS[@]}" --sample identity:3000 --idle "$IDLE" --hold 10 >"$W/idle-$t.out" 2>>"$W/load.err" & lp=$!
  for _ in $(seq 600); do grep -q idle_open "$W/idle-$t.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1; d=$(rss "$(pid $t)"); kill "$lp" 2>/dev/null || true; wait "$lp" 2>/dev/null || true
  IDLEKB[$t]=$(awk -v a="$b" -v b="$d" -v n="$IDLE" 'BEGIN{printf "%.1f", (b-a)/n}')
  echo "  idle $t: $b KB -> $d KB" >&2
done
for s in $SCENARIOS; do case $s in
  ka3k) scenario ka3k --sample identity:3000 --concurrency "$CONC";;
  ka50k) scenario ka50k --sample verify:50000 --concurrency "$CONC";;
  newconn) scenario newconn --sample identity:3000 --concurrency 16 --new-connection;;
esac; done
echo "| scenario | before req/s | after req/s | after/before | before p99 ms | after p99 ms |"
echo "|---|---|---|---|---|---|"
for s in $SCENARIOS; do
  echo "| $s | ${RPS[$s/before]} | ${RPS[$s/after]} | $(awk -v a="${RPS[$s/after]}" -v b="${RPS[$s/before]}" 'BEGIN{printf "%.2f", (b>0)?a/b:0}') | ${P99[$s/before]} | ${P99[$s/after]} |"
done
echo "| idle RSS per connection (KB) | ${IDLEKB[before]} | ${IDLEKB[after]} | $(awk -v a="${IDLEKB[after]}" -v b="${IDLEKB[before]}" 'BEGIN{printf "%.2f", (b>0)?a/b:0}') | | |"
