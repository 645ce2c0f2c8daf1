#!/usr/bin/env bash
# Benchmark: `ohrun plan` at scale — generated matrix jobs of 1,000, 10,000 and 100,000 runs (goal:
# < 200 ms at 10,000, linear beyond). Needs hyperfine (apt-get install hyperfine). Results go into
# BENCHMARKS.md by hand, with the machine and the date. PLAN_MARKDOWN=FILE: also write hyperfine's table
# there (bench/run_all.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --quiet   # run_all.sh builds once, before every part
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
bench/gen-matrix-job.sh 10 100 > "$dir/1k.yaml"
bench/gen-matrix-job.sh 100 100 > "$dir/10k.yaml"
bench/gen-matrix-job.sh 100 1000 > "$dir/100k.yaml"
for n in 1k 10k 100k; do ./target/release/ohrun plan --max-runs 100000 "$dir/$n.yaml" | tail -n 1; done
hyperfine --warmup 2 --runs 10 --output=null ${PLAN_MARKDOWN:+--export-markdown "$PLAN_MARKDOWN"} \
  "./target/release/ohrun plan --max-runs 100000 $dir/1k.yaml" \
  "./target/release/ohrun plan --max-runs 100000 $dir/10k.yaml" \
  "./target/release/ohrun plan --json --max-runs 100000 $dir/10k.yaml" \
  "./target/release/ohrun validate --max-runs 100000 $dir/10k.yaml" \
  "./target/release/ohrun plan --max-runs 100000 $dir/100k.yaml"
