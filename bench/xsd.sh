#!/usr/bin/env bash
# make bench-xsd: MB/s of `spocgw validate` against `xmllint --noout --schema` over the same
# 2,000 files per size, each tool in one process (schema compiled once), verdicts compared.
# Runs alternate (xmllint, spocgw on one thread, spocgw on every core, ...), best of three kept.
# xmllint is single-threaded; spocgw-1 is the like-for-like figure, spocgw-N what the tool does.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-2000}
WORK=bench/work/xsd
BIN=target/release/spocgw
cargo build --release --quiet --locked --bin spocgw --example xsd_docs
command -v xmllint >/dev/null || { echo "xmllint missing: apt-get install libxml2-utils" >&2; exit 1; }
now() { date +%s.%N; }
mkdir -p bench/results
exec > >(tee bench/results/xsd.txt)
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD), $COUNT files per size"
printf '%-8s %7s %12s %14s %8s %14s %8s %s\n' size MB xmllint_MB/s spocgw-1_MB/s ratio spocgw-N_MB/s ratio verdicts
for size in 5000 50000 200000; do
  dir=$WORK/$size
  rm -rf "$dir"
  target/release/examples/xsd_docs "$dir" "$size" "$COUNT"
  files=("$dir"/*.xml)
  bytes=$(cat "${files[@]}" | wc -c)
  best_x=999999; best_s=999999; best_p=999999
  for round in 1 2 3; do
    t0=$(now); xmllint --noout --schema policies/schemas/bio-v1.xsd "${files[@]}" 2>"$dir.xmllint.out" || true; t1=$(now)
    t2=$(now); "$BIN" validate --jobs 1 --schemas policies/schemas "${files[@]}" >"$dir.spocgw.out" || true; t3=$(now)
    t4=$(now); "$BIN" validate --schemas policies/schemas "${files[@]}" >"$dir.spocgw-par.out" || true; t5=$(now)
    best_x=$(echo "$t1 - $t0" | bc -l | awk -v b=$best_x '{print ($1<b)?$1:b}')
    best_s=$(echo "$t3 - $t2" | bc -l | awk -v b=$best_s '{print ($1<b)?$1:b}')
    best_p=$(echo "$t5 - $t4" | bc -l | awk -v b=$best_p '{print ($1<b)?$1:b}')
  done
  x_ok=$(grep -c ' validates$' "$dir.xmllint.out" || true)
  s_ok=$(grep -c ': ok$' "$dir.spocgw.out" || true)
  verdicts="same"; [ "$x_ok" = "$s_ok" ] || verdicts="DIFFER(xmllint $x_ok valid, spocgw $s_ok valid)"
  mb=$(echo "$bytes / 1000000" | bc -l)
  cmp -s "$dir.spocgw.out" "$dir.spocgw-par.out" || verdicts="$verdicts; parallel run DIFFERS"
  awk -v s=$size -v mb=$mb -v tx=$best_x -v ts=$best_s -v tp=$best_p -v v="$verdicts" -v n=$x_ok 'BEGIN{printf "%-8s %7.1f %12.1f %14.1f %7.1fx %14.1f %7.1fx %s (%d valid)\n", s, mb, mb/tx, mb/ts, tx/ts, mb/tp, tx/tp, v, n}'
done
