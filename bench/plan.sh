#!/usr/bin/env bash
# Benchmark: `ohrun plan` on a generated 10,000-run matrix job (goal: < 200 ms).
# Needs hyperfine (apt-get install hyperfine). Results go into BENCHMARKS.md by hand, with the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
job=$(mktemp --suffix=.yaml)
trap 'rm -f "$job"' EXIT
bench/gen-matrix-job.sh > "$job"
./target/release/ohrun plan "$job" | tail -n 1
hyperfine --warmup 3 --runs 20 --output=null \
  "./target/release/ohrun plan $job" \
  "./target/release/ohrun plan --json $job" \
  "./target/release/ohrun validate $job"
