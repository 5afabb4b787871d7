#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 30) from the corpus
# kept in fuzz/corpus; any crash or failed property assertion fails the run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2 >/dev/null 2>&1
SECS="${FUZZ_SECONDS:-30}"
# A fixed seed makes a CI run repeatable on a developer machine (same corpus, same mutations);
# long exploratory campaigns run with FUZZ_SEED=0 (random) and commit what they find to corpus/.
SEED="${FUZZ_SEED:-1}"
# cargo-fuzz needs nightly flags for the sanitizer; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build -O $targets >/dev/null 2>&1 || cargo fuzz build -O
failed=0
for t in $targets; do
  mkdir -p "corpus/$t"
  # Work on a scratch copy of the corpus so CI runs do not grow the committed one.
  work=$(mktemp -d)
  cp -r "corpus/$t/." "$work/" 2>/dev/null || true
  if cargo fuzz run -O "$t" "$work" -- -seed="$SEED" -max_total_time="$SECS" -rss_limit_mb=2048 -print_final_stats=1 >"$work.log" 2>&1; then
    runs=$(grep -E '^stat::number_of_executed_units' "$work.log" | awk '{print $2}')
    echo "fuzz $t: ok, ${runs:-?} runs in ${SECS}s"
  else
    echo "fuzz $t: FAILED"; tail -40 "$work.log"; failed=1
  fi
  rm -rf "$work" "$work.log"
done
exit $failed
