#!/usr/bin/env bash
# Bounded fuzzing of the request parser, the SSE parser and the Anthropic
# translation (fuzz/). Needs nightly and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# Crashing inputs land in fuzz/artifacts/<target>/; turn each into a
# regression test next to the code it broke, then fix it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
for target in request_parser sse_parser anthropic_translation; do
  echo "== $target for ${secs}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048
done
