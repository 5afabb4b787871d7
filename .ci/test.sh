#!/usr/bin/env bash
# The whole test suite: install what is missing, then unit tests and the integration binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh --test
cargo test --locked --all-targets 2>&1
