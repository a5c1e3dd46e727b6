#!/usr/bin/env bash
# Prints the performance figures of issue #7 (shieldcall send latency, listen memory) from a
# release build against a Prosody started by the test (needs the Debian package prosody).
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo test --release -p shieldcall --test perf -- --ignored --nocapture 2>&1 | grep -E '^(send|listen)|panicked|error'
