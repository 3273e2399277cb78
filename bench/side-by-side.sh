#!/usr/bin/env bash
# make bench (side-by-side part): spocgw against nginx on this machine, in one run.
#   direct : the load generator straight to the simulated Ministry (the ceiling)
#   nginx  : nginx terminating mutual TLS with the same certificates, TLS 1.3, P-256 keys,
#            proxy_pass over mutual TLS to the same upstream with a keep-alive pool
#   full   : spocgw, the whole pipeline (validation, policy, durable audit)
#   bare   : spocgw with bare_proxy = true (no validation, policy or audit: our floor)
#   fullmem: spocgw full pipeline with its audit log on tmpfs (fdatasync costs nothing there):
#            not a deployable setting, it shows what durable audit costs (keep-alive rows only)
#   bareaudit: bare plus the audit stage (bare_proxy_audit = true: each request's record durable
#            before forwarding, its outcome after), what the audit alone costs (keep-alive rows)
# Every target gets the same load generator (spocgw-load), the same bodies, and the runs
# alternate target by target, ROUNDS times, to cancel drift; the best round is kept.
# Writes bench/results/latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-2}
CONC=${CONC:-32}
IDLE=${IDLE:-1000}
W=bench/work/sbs
OUT=bench/results/latest.md
B=target/release/spocgw
L=target/release/spocgw-load

command -v nginx >/dev/null || { echo "nginx missing: apt-get install nginx-light" >&2; exit 1; }
cargo build --release --quiet --locked --bin spocgw --bin spocgw-load

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$W/nginx/nginx.pid" ] && kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
# At the end the gateways' audit logs go and the processes' logs keep their last lines (a line
# a request: gigabytes after a run).
trim_logs() { for f in "$W"/*.log; do [ -f "$f" ] && tail -n 200 "$f" >"$f.tail" && mv "$f.tail" "$f"; done; true; }
trap 'cleanup; rm -rf "$MEMDIR" "$W"/pki/audit*; trim_logs' EXIT

rm -rf "$W"; mkdir -p "$W/nginx/logs" "$W/nginx/tmp" bench/results
GP=$(port); GC=$(port); GA=$(port); MP=$(port); RP=$(port)
BP=$(port); BC=$(port); BA=$(port); NP=$(port); FP=$(port); FC=$(port); FA=$(port); AP=$(port); AC=$(port); AA=$(port)
MEMDIR=$(mktemp -d /dev/shm/spocgw-sbs-audit.XXXXXX)
$B dev-pki --out "$W/pki" --gateway-port "$GP" --callback-port "$GC" --admin-port "$GA" \
  --ministry-port "$MP" --receiver-port "$RP" >/dev/null
P=$(cd "$W/pki" && pwd)
# One terminal sends every request: lift the per-certificate rates.
sed -i -E 's/^(per_second|burst) *=.*/\1 = 100000000/' "$P/policies/routes.toml"
# ...and its per-source and per-certificate connection shares (the RSS row opens 1,000 + 1,000).
sed -i -E 's#^crls = \["ca/police-ca.crl.pem"\]$#&\nmax_connections_per_source = 8192\nmax_connections_per_client = 8192#' "$P/gateway.toml"
# variant FILE PORT CALLBACK_PORT ADMIN_PORT AUDIT_DIR [TOP-LEVEL LINE...]: gateway.toml with
# the same certificates on ports and an audit directory of its own
variant() { local file=$1 gp=$2 gc=$3 ga=$4 dir=$5; shift 5
  { printf '%s\n' "$@"; sed -e "s/127.0.0.1:$GP\"/127.0.0.1:$gp\"/" -e "s/127.0.0.1:$GC\"/127.0.0.1:$gc\"/" \
      -e "s/127.0.0.1:$GA\"/127.0.0.1:$ga\"/" -e "s#^dir = \"audit\"#dir = \"$dir\"#" "$P/gateway.toml"; } > "$P/$file"; }
variant gateway-bare.toml "$BP" "$BC" "$BA" audit-bare "bare_proxy = true"
variant gateway-bareaudit.toml "$AP" "$AC" "$AA" audit-bareaudit "bare_proxy = true" "bare_proxy_audit = true"
variant gateway-mem.toml "$FP" "$FC" "$FA" "$MEMDIR"

cat > "$W/nginx/nginx.conf" <<EOF
worker_processes auto;
user root;
pid $PWD/$W/nginx/nginx.pid;
error_log $PWD/$W/nginx/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log $PWD/$W/nginx/logs/access.log combined buffer=64k flush=1s;
  client_body_temp_path $PWD/$W/nginx/tmp/body;
  proxy_temp_path $PWD/$W/nginx/tmp/proxy;
  client_max_body_size 512k;
  client_body_buffer_size 512k;
  proxy_buffer_size 16k;
  proxy_buffers 16 64k;
  keepalive_requests 1000000;
  upstream ministry {
    server 127.0.0.1:$MP;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NP ssl http2;
    ssl_protocols TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_certificate $P/gateway/police-side.pem;
    ssl_certificate_key $P/gateway/police-side.key;
    ssl_client_certificate $P/ca/police-ca.pem;
    ssl_verify_client on;
    ssl_crl $P/ca/police-ca.crl.pem;
    ssl_session_tickets off;
    ssl_session_cache off;
    location / {
      proxy_pass https://ministry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate $P/gateway/ministry-side.pem;
      proxy_ssl_certificate_key $P/gateway/ministry-side.key;
      proxy_ssl_trusted_certificate $P/ca/ministry-ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }
}
EOF

$B sim ministry --config "$P/ministry.toml" 2>"$W/ministry.log" & PIDS+=($!); MIN_PID=$!
$B serve --config "$P/gateway.toml" 2>"$W/full.log" & PIDS+=($!); FULL_PID=$!
$B bench serve --config "$P/gateway-bare.toml" 2>"$W/bare.log" & PIDS+=($!); BARE_PID=$!
$B serve --config "$P/gateway-mem.toml" 2>"$W/fullmem.log" & PIDS+=($!); FULLMEM_PID=$!
$B bench serve --config "$P/gateway-bareaudit.toml" 2>"$W/bareaudit.log" & PIDS+=($!); BAREAUDIT_PID=$!
nginx -p "$PWD/$W/nginx" -c "$PWD/$W/nginx/nginx.conf"
for a in "$GA" "$BA" "$FA" "$AA"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$a/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$a/readyz" >/dev/null || { echo "gateway on admin port $a not ready" >&2; exit 1; }
done
sleep 0.3
NGINX_PID=$(cat "$W/nginx/nginx.pid")

url() { case $1 in direct) echo "https://127.0.0.1:$MP";; nginx) echo "https://127.0.0.1:$NP";;
  full) echo "https://127.0.0.1:$GP";; bare) echo "https://127.0.0.1:$BP";; fullmem) echo "https://127.0.0.1:$FP";;
  bareaudit) echo "https://127.0.0.1:$AP";; esac; }
creds() { if [ "$1" = direct ]; then echo "--ca $P/ca/ministry-ca.pem --cert $P/gateway/ministry-side.pem --key $P/gateway/ministry-side.key";
  else echo "--ca $P/ca/police-ca.pem --cert $P/clients/officer.pem --key $P/clients/officer.key"; fi; }
# load TARGET ARGS... -> the generator's line
load() { local t=$1; shift; # shellcheck disable=SC2046
  $L --url "$(url "$t")" $(creds "$t") --duration "$DUR" "$@" 2>>"$W/load.err" || echo "req_per_s=0 p99_ms=0 errors=failed"; }
field() { sed -E "s/.*$1=([^ ]+).*/\1/" <<<"$2"; }

# proc_sum FILE AWK PIDS...: the sum over processes of AWK's number from /proc/PID/FILE (0 for
# a process gone)
proc_sum() { local file=$1 prog=$2 total=0; shift 2; for p in "$@"; do
  total=$((total + $(awk "$prog" "/proc/$p/$file" 2>/dev/null || echo 0))); done; echo $total; }
# CPU time (clock ticks) of processes, all their threads; the machine's idle and iowait ticks
cpu_ticks() { proc_sum stat '{print $14+$15}' "$@"; }
idle_ticks() { awk '/^cpu /{print $5+$6}' /proc/stat; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
pids_of() { case $1 in nginx) echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')";; full) echo "$FULL_PID";;
  bare) echo "$BARE_PID";; fullmem) echo "$FULLMEM_PID";; bareaudit) echo "$BAREAUDIT_PID";; direct) echo "";; esac; }

declare -A RPS P99 ERR CPU MCPU REST IDLEPCT
# scenario NAME TARGETS ARGS...: alternates targets ROUNDS times, keeps the best req/s, and
# for that round the CPU each process spent per request.
scenario() {
  local name=$1 targets=$2; shift 2
  for t in $targets; do RPS[$name/$t]=0; P99[$name/$t]=0; ERR[$name/$t]=0; done
  for _ in $(seq "$ROUNDS"); do
    for t in $targets; do
      # shellcheck disable=SC2046
      local t0 m0 i0 w0; t0=$(cpu_ticks $(pids_of "$t")); m0=$(cpu_ticks "$MIN_PID"); i0=$(idle_ticks); w0=$(date +%s%N)
      local line; line=$(load "$t" "$@")
      # shellcheck disable=SC2046
      local t1 m1 i1 w1; t1=$(cpu_ticks $(pids_of "$t")); m1=$(cpu_ticks "$MIN_PID"); i1=$(idle_ticks); w1=$(date +%s%N)
      echo "  $name $t: $line" >&2
      local r n; r=$(field req_per_s "$line"); n=$(field requests "$line")
      if awk -v a="$r" -v b="${RPS[$name/$t]}" 'BEGIN{exit !(a>b)}'; then
        RPS[$name/$t]=$r; P99[$name/$t]=$(field p99_ms "$line"); ERR[$name/$t]=$(field errors "$line")
        # per request: the target, the Ministry, the rest of the machine's busy time (load
        # generator, kernel work outside these processes); idle share of all cores
        read -r CPU[$name/$t] MCPU[$name/$t] REST[$name/$t] IDLEPCT[$name/$t] < <(awk -v t="$((t1 - t0))" \
          -v m="$((m1 - m0))" -v i="$((i1 - i0))" -v w="$(( (w1 - w0) / 1000 ))" -v n="$n" -v u="$TICK_US" -v c="$(nproc)" \
          'BEGIN{ if (n+0 == 0) { print "n/a n/a n/a n/a"; exit }
                  busy = c*w - i*u; printf "%.1f %.1f %.1f %.0f\n", t*u/n, m*u/n, (busy - (t+m)*u)/n, 100*i*u/(c*w) }')
      fi
    done
  done
}

# RSS per idle mutual-TLS connection, first, on fresh processes: resident memory before and
# while IDLE connections are open (what the first requests touch once counts too); then, with
# those still open, IDLE more: the marginal cost of an idle connection.
rss_kb() { proc_sum status '/^VmRSS/{print $2}' "$@"; }
declare -A PERCONN MARGINAL
# open_idle TARGET FILE HOLD: opens IDLE connections in the background, returns when all are open
open_idle() { # shellcheck disable=SC2046
  $L --url "$(url "$1")" $(creds "$1") --sample identity:3000 --idle "$IDLE" --hold "$3" >"$2" 2>>"$W/load.err" &
  for _ in $(seq 600); do grep -q idle_open "$2" 2>/dev/null && break; sleep 0.1; done
  sleep 1
}
for t in nginx full bare; do
  before=$(rss_kb $(pids_of "$t"))
  open_idle "$t" "$W/idle-$t.out" 30; lp=$!
  during=$(rss_kb $(pids_of "$t"))
  open_idle "$t" "$W/idle2-$t.out" 4; lp2=$!
  more=$(rss_kb $(pids_of "$t"))
  kill "$lp" 2>/dev/null || true
  wait "$lp" "$lp2" || true
  PERCONN[$t]=$(awk -v a="$before" -v b="$during" -v n="$IDLE" 'BEGIN{printf "%.1f", (b-a)/n}')
  MARGINAL[$t]=$(awk -v a="$during" -v b="$more" -v n="$IDLE" 'BEGIN{printf "%.1f", (b-a)/n}')
  echo "  idle $t: rss ${before} KB -> ${during} KB -> ${more} KB with $(cat "$W/idle-$t.out") then $(cat "$W/idle2-$t.out")" >&2
done

# SHA-256 throughput of this CPU (MB/s), for the report's floor
SHA_MBS=$(openssl speed -evp sha256 -bytes 16384 -seconds 1 2>/dev/null | awk '$1 == "sha256" { sub(/k$/, "", $2); printf "%.0f", $2 / 1000 }' || true)
SHA_MBS=${SHA_MBS:-0}
ALL="direct nginx full bare"
echo "side-by-side: ${DUR}s runs, $ROUNDS rounds alternating, concurrency $CONC" >&2
# the keep-alive bodies (the report's floor hashes their sizes)
KA3K=identity:3000 KA50K=verify:50000
scenario ka3k "$ALL fullmem bareaudit" --sample "$KA3K" --concurrency "$CONC"
scenario ka50k "$ALL fullmem bareaudit" --sample "$KA50K" --concurrency "$CONC"
scenario ka200k "$ALL" --sample verify:200000 --concurrency 16
scenario newconn "$ALL" --sample identity:3000 --concurrency 16 --new-connection
HALF=$(awk -v r="${RPS[ka3k/nginx]}" 'BEGIN{printf "%d", r/2}')
scenario half "nginx full bare" --sample identity:3000 --concurrency 64 --rate "$HALF"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2fx", a/b; else print "n/a" }'; }
{
  echo "# Side-by-side: spocgw vs nginx"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' (+ uncommitted changes)')"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "- nginx $(nginx -v 2>&1 | cut -d/ -f2), $(nproc) workers; spocgw release, $(nproc) runtime threads; load generator, simulated Ministry and target share the cores"
  echo "- ${DUR}s per run, $ROUNDS rounds alternating direct/nginx/full/bare (keep-alive rows: also fullmem and bareaudit), best round kept; TLS 1.3, ECDSA P-256 certificates, mutual TLS on both sides"
  echo
  echo "| scenario | nginx | spocgw full | full/nginx | spocgw bare | full/bare | ceiling (direct) | goal |"
  echo "|---|---|---|---|---|---|---|---|"
  for s in ka3k:"keep-alive req/s, 3 KB CheckIdentity, c=$CONC":">= 1.0x" \
           ka50k:"keep-alive req/s, 50 KB VerifyFingerprint, c=$CONC":">= 1.0x" \
           ka200k:"keep-alive req/s, 200 KB VerifyFingerprint, c=16":"" \
           newconn:"new mutual-TLS connection per request, req/s, c=16":">= 1.5x"; do
    k=${s%%:*}; rest=${s#*:}; label=${rest%:*}; goal=${rest##*:}
    echo "| $label | ${RPS[$k/nginx]} | ${RPS[$k/full]} | $(ratio "${RPS[$k/full]}" "${RPS[$k/nginx]}") | ${RPS[$k/bare]} | $(ratio "${RPS[$k/full]}" "${RPS[$k/bare]}") | ${RPS[$k/direct]} | $goal |"
  done
  echo "| p99 ms at $HALF req/s (half nginx's 3 KB max; at most 64 outstanding, more counted as errors: nginx ${ERR[half/nginx]}, full ${ERR[half/full]}) | ${P99[half/nginx]} | ${P99[half/full]} | $(awk -v a="${P99[half/full]}" -v b="${P99[half/nginx]}" 'BEGIN{printf "%+.2f ms", a-b}') | ${P99[half/bare]} | | | <= nginx + 1 ms |"
  echo "| RSS KB per idle mutual-TLS connection ($IDLE open) | ${PERCONN[nginx]} | ${PERCONN[full]} | $(ratio "${PERCONN[full]}" "${PERCONN[nginx]}") | ${PERCONN[bare]} | | | <= 0.5x |"
  echo "| the same, marginal: $IDLE more with those open | ${MARGINAL[nginx]} | ${MARGINAL[full]} | $(ratio "${MARGINAL[full]}" "${MARGINAL[nginx]}") | ${MARGINAL[bare]} | | | |"
  echo
  echo "Errors (best rounds): $(for k in "${!ERR[@]}"; do [ "${ERR[$k]}" != 0 ] && printf '%s=%s ' "$k" "${ERR[$k]}"; done; true)"
  echo
  echo "What the audit costs, in the same run: bare with the audit stage alone (\`bare_proxy_audit = true\`: the request's record, with the body's SHA-256, durable before forwarding, the outcome's after; no validation or policy), and the full pipeline with its audit log on tmpfs, where fdatasync costs nothing (neither is a deployable setting):"
  echo
  echo "| scenario | spocgw bare | bare + audit | (bare + audit)/bare | spocgw full | full, audit on tmpfs | full/full-tmpfs | full-tmpfs/bare |"
  echo "|---|---|---|---|---|---|---|---|"
  for k in ka3k ka50k; do
    echo "| $k | ${RPS[$k/bare]} | ${RPS[$k/bareaudit]} | $(ratio "${RPS[$k/bareaudit]}" "${RPS[$k/bare]}") | ${RPS[$k/full]} | ${RPS[$k/fullmem]} | $(ratio "${RPS[$k/full]}" "${RPS[$k/fullmem]}") | $(ratio "${RPS[$k/fullmem]}" "${RPS[$k/bare]}") |"
  done
  echo
  echo "Goal 'spocgw full vs bare >= 0.85x' is the full/bare column of the keep-alive rows; (bare + audit)/bare is what the audit stage alone leaves of it."
  echo
  echo "Where the CPU goes (the best rounds above): microseconds of CPU per request of the target's processes (nginx: master and workers), of the simulated Ministry, and of the rest of the machine's busy time (the load generator, kernel work outside these processes), and the share of both cores left idle:"
  echo
  echo "| scenario | target | req/s | target us/req | Ministry us/req | rest us/req | idle |"
  echo "|---|---|---|---|---|---|---|"
  for k in ka3k ka50k; do for t in direct nginx full fullmem bareaudit bare; do
    echo "| $k | $t | ${RPS[$k/$t]} | ${CPU[$k/$t]} | ${MCPU[$k/$t]} | ${REST[$k/$t]} | ${IDLEPCT[$k/$t]}% |"
  done; done
  echo
  echo "What the goal full/nginx >= 1.0x leaves the gateway: the load generator and the Ministry do the same work per request whoever sits between them, so (taking their CPU per request as in the comparison's run, which favours full: its measured rest is higher, and it leaves more idle) full serves as many requests a second as nginx only if its CPU per request is at most nginx's. The floor is bare's CPU per request plus SHA-256 of the request body alone, which the audit record must carry (SHA-256 on this CPU: ${SHA_MBS} MB/s, \`openssl speed -evp sha256\`); validation, policy, the durable record and the reply's digest must fit in what is left:"
  echo
  echo "| scenario | budget vs nginx us/req | floor: bare + SHA-256 of body us/req | left for validation, policy, audit us/req | full now us/req |"
  echo "|---|---|---|---|---|"
  for s in "ka3k:${KA3K##*:}" "ka50k:${KA50K##*:}"; do
    k=${s%%:*}; size=${s##*:}
    awk -v nt="${CPU[$k/nginx]}" -v bt="${CPU[$k/bare]}" -v ft="${CPU[$k/full]}" -v size="$size" -v mbs="$SHA_MBS" -v k="$k" 'BEGIN{
        if (mbs+0 == 0 || nt == "n/a" || bt == "n/a" || ft == "n/a") { printf "| %s | n/a | n/a | n/a | %s |\n", k, ft; exit }
        sha = size / mbs; floor = bt + sha
        printf "| %s | %.1f | %.1f (%.1f + %.1f) | %.1f | %.1f |\n", k, nt, floor, bt, sha, nt - floor, ft }'
  done
  echo
  echo "What the goal full/bare >= 0.85x leaves, in machine time per request (both cores' time over the requests served, 2 cores / req/s, idle included: the goal holds exactly when full's is at most bare's / 0.85), against what the audit stage alone costs (bare + audit minus bare):"
  echo
  echo "| scenario | bare us/req | budget: bare / 0.85 - bare | audit stage alone | left for validation and policy | full - bare now |"
  echo "|---|---|---|---|---|---|"
  for k in ka3k ka50k; do
    awk -v b="${RPS[$k/bare]}" -v a="${RPS[$k/bareaudit]}" -v f="${RPS[$k/full]}" -v c="$(nproc)" -v k="$k" 'BEGIN{
      if (b+0 == 0 || a+0 == 0 || f+0 == 0) { printf "| %s | n/a | n/a | n/a | n/a | n/a |\n", k; exit }
      tb = c*1e6/b; budget = tb/0.85 - tb; audit = c*1e6/a - tb
      printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", k, tb, budget, audit, budget - audit, c*1e6/f - tb }'
  done
  # The XSD and audit figures of the same `make bench` (written just before this script).
  for part in "xsd:XSD validation against xmllint (bench/xsd.sh)" "audit:Audit log (cargo bench --bench audit)"; do
    f=bench/results/${part%%:*}.txt
    echo
    echo "## ${part#*:}"
    echo
    if [ -f "$f" ]; then echo '```'; grep -v '^\s*$' "$f" | grep -v '^\s*\(Finished\|Running\|Compiling\)'; echo '```'
    else echo "not run (make bench runs it; make bench-sbs does not)"; fi
  done
} > "$OUT"
cat "$OUT"
