#!/usr/bin/env bash
# The seed job on the docker and the local sandbox, N runs each (interleaved): provisioning (start until
# /health answers, from run.json) and the whole job (wall). Needs target/release/ohrun, the image
# (`ohrun setup docker`) and the venv (`ohrun setup local`), so that neither is built inside a timing.
# Prints a markdown table. Usage: bench/docker_vs_local.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
bin=$PWD/target/release/ohrun
[ -x "$bin" ] || { echo "bench: error: $bin is missing (cargo build --release --locked)" >&2; exit 1; }
docker image inspect ohrun/agent-server:1.58.2-python >/dev/null 2>&1 \
  || { echo "bench: error: the image ohrun/agent-server:1.58.2-python is missing (ohrun setup docker)" >&2; exit 1; }
declare -A prov whole
for i in $(seq "$n"); do
  for kind in docker local; do
    work=$(mktemp -d)
    start=$(date +%s.%N)
    (cd "$work" && "$bin" -q run --rehearse "$OLDPWD/jobs/$kind.yaml")
    end=$(date +%s.%N)
    report=$(ls "$work"/ohrun-reports/*/*/run.json)
    p=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['sandbox']['provision_ms'] / 1000)" "$report")
    printf '%s\trun %s\tprovision %.1f s\twhole job %.1f s\n' "$kind" "$i" "$p" "$(echo "$end - $start" | bc -l)" >&2
    prov[$kind]+="$(printf '%.1f s' "$p"), "
    whole[$kind]+="$(printf '%.1f s' "$(echo "$end - $start" | bc -l)"), "
    rm -rf "$work"
  done
done
echo "| backend | provision | whole seed job |"
echo "|---|---|---|"
for kind in docker local; do
  echo "| $kind | ${prov[$kind]%, } | ${whole[$kind]%, } |"
done
