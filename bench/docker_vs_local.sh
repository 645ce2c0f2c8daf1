#!/usr/bin/env bash
# The seed job on the docker and the local sandbox, N runs each (interleaved): provisioning (start until
# /health answers, from run.json) and the whole job (wall). Needs target/release/ohrun, the image
# (`ohrun setup docker`) and the venv (`ohrun setup local`), so that neither is built inside a timing.
# Usage: bench/docker_vs_local.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
bin=$PWD/target/release/ohrun
for i in $(seq "$n"); do
  for kind in docker local; do
    work=$(mktemp -d)
    start=$(date +%s.%N)
    (cd "$work" && "$bin" -q run --rehearse "$OLDPWD/jobs/$kind.yaml")
    end=$(date +%s.%N)
    report=$(ls "$work"/ohrun-reports/*/*/run.json)
    prov=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['sandbox']['provision_ms'])" "$report")
    printf '%s\trun %s\tprovision %.1f s\twhole job %.1f s\n' "$kind" "$i" "$(echo "$prov / 1000" | bc -l)" "$(echo "$end - $start" | bc -l)"
    rm -rf "$work"
  done
done
