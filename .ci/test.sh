#!/usr/bin/env bash
# The whole test suite: install what is missing, fuzz every parser for a bounded time, then the unit
# tests, the integration binary and the benches in test mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh --test
bash .ci/fuzz.sh
cargo test --locked --all-targets 2>&1
