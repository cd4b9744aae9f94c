#!/usr/bin/env bash
# Bounded soak (not in CI): 16 concurrent clients for SOAK_SECS (default 600)
# against the real router binary on real Postgres, the mock upstreams failing
# at random (5xx, 429 with and without Retry-After, streams broken mid-way,
# short and long delays), over plain routes and one with TTFT hedging and
# stream continuation. Prints errors seen by clients, events lost (must be 0),
# and the router's resident memory after warm-up, at its peak and at the end.
# Usage: SOAK_SECS=600 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pg_isready -h 127.0.0.1 -p 5432
SOAK_SECS="${SOAK_SECS:-600}" cargo test --release --test api soak:: -- --ignored --nocapture
