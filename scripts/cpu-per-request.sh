#!/usr/bin/env bash
# CPU time the router spends per request, by thread group, under the load
# harness: where a saturated router's throughput goes, and a figure that
# moves less from run to run than req/s does on a shared machine (the
# harness's own numbers still move; compare binaries by alternating runs).
#
#   scripts/cpu-per-request.sh                        # fixed model, c=64, 12 s
#   TARGET=router-bandit LEVEL=16 scripts/cpu-per-request.sh
#
# Runs one cell of `cargo bench --bench load` (non-streaming), reads every
# switchboard thread's user+system CPU from /proc/<pid>/task/*/stat at two
# points in the measured window (SAMPLE_S apart), and divides by the
# requests the cell completed over that time (its req/s times SAMPLE_S).
# Thread names lose their numeric suffix, so "tokio-rt-worker" is every
# runtime worker and "sb-sqlite" every SQLite connection thread.
# Linux only. See docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${TARGET:-router-fixed}
LEVEL=${LEVEL:-64}
DURATION_S=${DURATION_S:-12}
SAMPLE_S=${SAMPLE_S:-5}
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/tmp/cpu-per-request}
mkdir -p "$OUT"
(( SAMPLE_S + 3 < DURATION_S )) || { echo "SAMPLE_S must be at least 3 s shorter than DURATION_S" >&2; exit 1; }

cargo bench --bench load --no-run >/dev/null 2>&1
log="$OUT/harness.log"
# A previous run's log names its (gone) router: read only this run's.
: >"$log"
cargo bench --bench load -- --targets "$TARGET" --modes nonstream --levels "$LEVEL" \
  --duration-s "$DURATION_S" --warmup-s 2 --memory-streams 0 --out "$OUT" >"$OUT/report.md" 2>"$log" &
harness=$!

pid=""
for _ in $(seq 1 600); do
  pid="$(sed -n 's/.*started switchboard pid=\([0-9]*\).*/\1/p' "$log" | tail -1)"
  [[ -n "$pid" ]] && break
  kill -0 "$harness" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.2
done
[[ -n "$pid" ]] || { echo "switchboard did not start" >&2; exit 1; }
# Past the harness's checks, the warm-up and the first seconds of the cell.
sleep 6

# "name ticks" per thread group: comm with its numeric suffix cut, and the
# sum of utime and stime (fields 14 and 15 of stat; comm may hold spaces,
# so fields are counted after its closing parenthesis).
snapshot() {
  for stat in /proc/"$pid"/task/*/stat; do
    line="$(cat "$stat" 2>/dev/null)" || continue
    comm="${line#*(}"; comm="${comm%)*}"
    rest=(${line##*) })
    while [[ $comm == *[-0-9] ]]; do comm="${comm%?}"; done
    echo "$comm $(( rest[11] + rest[12] ))"
  done | awk '{t[$1] += $2} END {for (k in t) print k, t[k]}' | sort
}
snapshot >"$OUT/cpu-start"
sleep "$SAMPLE_S"
snapshot >"$OUT/cpu-end"
wait "$harness"

rps="$(awk -F'|' -v c="$LEVEL" -v t="$TARGET" '$2+0 == c && $3 ~ t {gsub(/[ ,]/, "", $4); print $4; exit}' "$OUT/report.md")"
[[ -n "$rps" ]] || { echo "no req/s for $TARGET at c=$LEVEL in $OUT/report.md" >&2; exit 1; }
echo "$TARGET c=$LEVEL: $rps req/s; CPU per request over ${SAMPLE_S} s of the cell:"
join "$OUT/cpu-start" "$OUT/cpu-end" | awk -v rps="$rps" -v s="$SAMPLE_S" -v hz="$(getconf CLK_TCK)" '
  { us = ($3 - $2) / hz * 1e6 / (rps * s); total += us; printf "  %-20s %7.1f us\n", $1, us }
  END { printf "  %-20s %7.1f us\n", "all threads", total }'
