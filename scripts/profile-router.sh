#!/usr/bin/env bash
# Profiles the release router under load: runs the load harness through the
# bandit route (non-streaming, with feedback; TARGET/MODE/LEVEL to change) and
# samples switchboard with `perf record` meanwhile, then prints the hottest
# functions (self time, and with callees) into $OUT/perf-*.txt.
#
#   scripts/profile-router.sh            # OUT defaults to $CARGO_TARGET_DIR/tmp/bench-gateway
#
# Needs `perf` (apt-get install linux-perf); see docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${TARGET:-router-bandit}
MODE=${MODE:-nonstream}
LEVEL=${LEVEL:-16}
SECONDS_UNDER_LOAD=${SECONDS_UNDER_LOAD:-20}
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/tmp/bench-gateway}
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf not found" >&2; exit 1; }

cargo bench --bench load --no-run >/dev/null 2>&1
log="$OUT/profile-harness.log"
cargo bench --bench load -- --targets "$TARGET" --modes "$MODE" --levels "$LEVEL" \
  --duration-s "$SECONDS_UNDER_LOAD" --warmup-s 2 --memory-streams 0 >"$OUT/profile-report.md" 2>"$log" &
harness=$!
pid=""
for _ in $(seq 1 600); do
  pid="$(sed -n 's/.*started switchboard pid=\([0-9]*\).*/\1/p' "$log" | head -1)"
  # Past the harness's short checks and the warm-up.
  [[ -n "$pid" ]] && sleep 6 && break
  kill -0 "$harness" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.5
done
[[ -n "$pid" ]] || { echo "switchboard did not start" >&2; exit 1; }
perf record -F 1999 -g --call-graph dwarf,16384 -p "$pid" -o "$OUT/perf.data" -- sleep $((SECONDS_UNDER_LOAD / 2)) 2>/dev/null
wait "$harness"
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 1 -g none 2>/dev/null \
  | grep -v '^$' >"$OUT/perf-self.txt"
perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 3 -g none 2>/dev/null \
  | grep -v '^$' >"$OUT/perf-children.txt"
echo "== self time (top) ==";        sed -n '1,45p' "$OUT/perf-self.txt"
echo "== with callees (top) ==";     sed -n '1,60p' "$OUT/perf-children.txt"
