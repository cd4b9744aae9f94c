#!/usr/bin/env bash
# Bounded soak (not in CI): 16 concurrent clients for SOAK_SECS (default 600)
# against real Postgres, the mock upstreams failing at random (5xx, 429 with
# and without Retry-After, broken streams, delays). Prints errors seen by
# clients, events lost (must be 0) and resident memory at start and end.
# Usage: SOAK_SECS=600 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pg_isready -h 127.0.0.1 -p 5432
SOAK_SECS="${SOAK_SECS:-600}" cargo test --release --test api soak:: -- --ignored --nocapture
