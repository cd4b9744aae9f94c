#!/usr/bin/env bash
# Counts the CPU instructions a proxy spends per request, under callgrind:
# a number that does not move when other processes share the machine (unlike
# req/s or latency), so optimisations can be compared before and after on a
# busy box. The mock upstream and the load generator run natively; only the
# side under test runs under valgrind, with collection switched on just for
# the measured requests (plus a short tail so the outbox writer's batch of
# them is counted too). Every thread of the process counts.
#
#   scripts/count-instructions.sh                      # router, fixed model, 2,000 requests, c=1
#   TARGET=zero-proxy scripts/count-instructions.sh    # the zero-work proxy, the same way
#   TARGET=router-bandit scripts/count-instructions.sh # the LinUCB route, feedback for every answer
#   MODE=stream REQUESTS=500 CONCURRENCY=8 DATABASE_URL=postgres://... scripts/count-instructions.sh
#   WRITER_YIELDS=true TARGET=router-bandit scripts/count-instructions.sh  # as `cargo bench --bench load` configures it
#
# Prints instructions per request and writes the callgrind profile and the
# hottest functions (inclusive) to $OUT (callgrind_annotate reads the profile).
# Needs valgrind. See docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${TARGET:-router-fixed}
MODE=${MODE:-nonstream}
REQUESTS=${REQUESTS:-2000}
WARMUP=${WARMUP:-300}
CONCURRENCY=${CONCURRENCY:-1}
WRITER_YIELDS=${WRITER_YIELDS:-false}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/tmp/count-instructions}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }

load="$(cargo bench --bench load --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)"
[[ -x "$load" ]] || { echo "could not build the load harness" >&2; exit 1; }
router="$TARGET_DIR/release/switchboard"
[[ -x "$router" ]] || { echo "$router is missing (cargo bench builds it)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url, seconds, pid
  for _ in $(seq 1 $(($2 * 10))); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "the process behind $1 exited; see $OUT/*.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$1 did not answer" >&2
  return 1
}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

mock_port=$(free_port)
"$load" mock --port "$mock_port" >"$OUT/mock.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$mock_port/health" 10 $!

port=$(free_port)
profile="$OUT/callgrind.$TARGET.$MODE.out"
rm -f "$profile"
vg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$profile")
case "$TARGET" in
  zero-proxy)
    "${vg[@]}" "$load" proxy --port "$port" --upstream "127.0.0.1:$mock_port" >"$OUT/target.log" 2>&1 &
    pid=$!
    ready="http://127.0.0.1:$port/health"
    model=bench-a
    ;;
  router-fixed | router-bandit)
    db="$OUT/switchboard.db"
    rm -f "$db" "$db-wal" "$db-shm" "$OUT/spill.jsonl"
    cat >"$OUT/switchboard.toml" <<EOF
[server]
listen = "127.0.0.1:$port"

[store]
spill_path = "$OUT/spill.jsonl"
writer_yields = $WRITER_YIELDS

[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"

[[models]]
name = "bench-a"
provider = "mock"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.6

[[models]]
name = "bench-b"
provider = "mock"
input_usd_per_mtok = 2.5
output_usd_per_mtok = 10.0

[[models]]
name = "bench-c"
provider = "mock"
input_usd_per_mtok = 0.8
output_usd_per_mtok = 4.0

[[models]]
name = "bench-d"
provider = "mock"
input_usd_per_mtok = 0.0
output_usd_per_mtok = 0.0

[[routes]]
name = "auto"
models = ["bench-a", "bench-b", "bench-c", "bench-d"]
policy = "linucb"
EOF
    DATABASE_URL=${DATABASE_URL:-sqlite://$db} RUST_LOG=warn \
      "${vg[@]}" "$router" serve --config "$OUT/switchboard.toml" >"$OUT/target.log" 2>&1 &
    pid=$!
    ready="http://127.0.0.1:$port/readyz"
    model=$([[ "$TARGET" == router-bandit ]] && echo auto || echo bench-a)
    ;;
  *) echo "TARGET must be zero-proxy, router-fixed or router-bandit" >&2; exit 2 ;;
esac
pids+=("$pid")
wait_http "$ready" 180 "$pid"

gen=("$load" loadgen --addr "127.0.0.1:$port" --model "$model" --concurrency "$CONCURRENCY")
[[ "$MODE" == stream ]] && gen+=(--stream)
[[ "$TARGET" == router-bandit ]] && gen+=(--feedback)
"${gen[@]}" --requests "$WARMUP" >"$OUT/warmup.json"
callgrind_control -i on "$pid" >/dev/null
"${gen[@]}" --requests "$REQUESTS" | tee "$OUT/measured.json"
sleep "${TAIL_S:-2}" # the outbox writes its last batch
callgrind_control -i off "$pid" >/dev/null
kill -TERM "$pid"
wait "$pid" || true

total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$profile" | head -1)
[[ -n "$total" ]] || total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$profile" | head -1)
callgrind_annotate --inclusive=yes "$profile" 2>/dev/null | head -80 >"$OUT/top-inclusive.$TARGET.$MODE.txt" || true
callgrind_annotate "$profile" 2>/dev/null | head -60 >"$OUT/top-self.$TARGET.$MODE.txt" || true
echo "$TARGET $MODE c=$CONCURRENCY: $total instructions for $REQUESTS requests = $((total / REQUESTS)) per request"
echo "profile: $profile (top functions: $OUT/top-*.$TARGET.$MODE.txt)"
