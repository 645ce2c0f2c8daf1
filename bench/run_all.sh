#!/usr/bin/env bash
# The whole issue-H benchmark set in one sitting, on this machine: builds ohrun in release mode, checks that
# every part it needs is there (failing loudly, before any timing, if one is not), runs each benchmark, and
# writes every result as markdown tables ready for BENCHMARKS.md into one results directory, with the date
# and the versions (ohrun, git commit, agent-server, Docker, Python). Prints its own total wall time.
#
#   bench/run_all.sh                 # results in bench/results/<UTC date-time>/ (gitignored)
#   BENCH_OUT=/tmp/h bench/run_all.sh
#   BENCH_ONLY="seed docker_sdk" bench/run_all.sh      # some parts only (names below)
#
# Parts (in order): plan, scale, seed (a: seed job vs SDK on a running server), docker_sdk (b: ohrun docker
# vs SDK DockerWorkspace), matrix_sdk (c: 12-run matrix vs SDK thread pool), batch, server_bound (12 and 48
# runs at once on one server against its floor), docker_local,
# local_batch (plain = --prefetch 0, --prefetch 2 = the default for --jobs 4, share: batch), first_install
# (a hook: `ohrun setup local` into an empty HOME).
# Counts: BENCH_RUNS (5, for seed/docker_sdk/matrix_sdk), SCALE_NS ("100 1000 10000", about 13–17 min with SCALE_REPS=3), DOCKER_LOCAL_RUNS (3),
# LOCAL_BATCH_RUNS (2), FIRST_INSTALL_INSTALLERS ("uv"; "uv pip" adds the pip fallback, ~100 s more).
# Run it when nothing else runs on the machine: about 35 minutes on the 2-core machine kind (the scale part at 10,000 runs, 3 repetitions, is half of it), plus the
# build (nothing if target/release is current, 4-5 minutes from a clean tree). Prerequisites it checks and
# does not install: the managed venv (`ohrun setup local`), the image (`ohrun setup docker`), a Docker
# engine; it installs the SDK's openhands-workspace into ~/.cache/ohrun-bench (bench/setup_sdk_workspace.sh)
# and, as root, hyperfine and bc with apt-get when missing. Exit 1 if any part failed or left something
# running; each part's stderr is in its .log beside its .md.
# The whole script is one { … } block, read by bash before it runs: editing this file meanwhile is safe.
{
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
OUT=${BENCH_OUT:-$ROOT/bench/results/$(date -u +%Y-%m-%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
OHRUN=$ROOT/target/release/ohrun
VERSION=1.58.2
MANAGED_PY=${OHRUN_HOME:-$HOME/.cache/ohrun}/agent-server-$VERSION/bin/python
IMAGE=ohrun/agent-server:$VERSION-python
RUNS=${BENCH_RUNS:-5}
FAILED=()
PLACEHOLDERS=()
TIMES=()
# The parts use the binaries built once here (plan.sh and scale.py would otherwise build again, and pick up
# any source edited meanwhile); litellm reads its bundled cost map (no network); no SDK banner.
export BENCH_NO_BUILD=1 OPENHANDS_SUPPRESS_BANNER=1 LITELLM_LOCAL_MODEL_COST_MAP=True

say() { printf '\n== %s  [%s, +%ds]\n' "$*" "$(date -u +%H:%M:%S)" "$(( $(date +%s) - T0 ))" >&2; }
die() { echo "run_all: error: $*" >&2; exit 1; }
wanted() { [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" $1 "* ]]; }

# run_part NAME "TITLE" "COMMAND AS SHOWN" CMD...: stdout (markdown) to $OUT/NAME.md, stderr to $OUT/NAME.log
# (and the terminal); a part that fails is recorded and the others still run; the harness then exits 1.
run_part() {
  local name=$1 title=$2 shown=$3; shift 3
  wanted "$name" || return 0
  say "$title"
  local start=$(date +%s)
  { echo "## $title"; echo; echo "Command: \`$shown\`"; echo; } > "$OUT/$name.md"
  "$@" >> "$OUT/$name.md" 2> >(tee "$OUT/$name.log" >&2)
  local rc=$?
  local took=$(( $(date +%s) - start ))
  TIMES+=("| $name | ${took} s | $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)") |")
  if [ $rc != 0 ]; then
    FAILED+=("$name")
    echo "run_all: PART FAILED: $name (exit $rc); its log: $OUT/$name.log" >&2
  fi
  cat "$OUT/$name.md" >&2
}

# ---------------------------------------------------------------------------------------------------------
# Preflight: everything every part needs, before any timing.
preflight() {
  say "build (release) and preflight"
  local start=$(date +%s)
  cargo build --release --locked --quiet || die "cargo build --release failed"
  cargo build --release --locked --quiet --example sim_agent_server || die "building the simulator failed"
  TIMES+=("| build (release: ohrun and the simulator) | $(( $(date +%s) - start )) s | ok |")
  [ -x "$OHRUN" ] || die "$OHRUN is missing after the build"
  if [ -e /root/.pyenv/shims/.pyenv-shim ]; then
    die "a pyenv lock /root/.pyenv/shims/.pyenv-shim exists: every new bash (the agent's terminals) would hang; if no pyenv process runs, remove it"
  fi
  command -v python3 >/dev/null || die "no python3 on PATH"
  # Two Debian tools the shell benchmarks use: installed when missing and we are root, else an error.
  local tool
  for tool in hyperfine bc; do
    if ! command -v $tool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "run_all: installing $tool with apt-get" >&2
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool; } >&2
    fi
    command -v $tool >/dev/null || die "$tool is missing (apt-get install $tool): bench/plan.sh and bench/docker_vs_local.sh need it"
  done
  [ -x "$MANAGED_PY" ] || die "ohrun's managed venv is missing ($MANAGED_PY): run \`$OHRUN setup local\`"
  "$MANAGED_PY" -c 'import openhands.sdk, openhands.agent_server' || die "$MANAGED_PY has no OpenHands SDK / agent-server"
  command -v docker >/dev/null || die "no docker CLI on PATH"
  docker version >/dev/null 2>&1 || die "the Docker engine does not answer"
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "the image $IMAGE is missing: run \`$OHRUN setup docker\`"
  local running; running=$(docker ps -q | wc -l)
  [ "$running" = 0 ] || echo "run_all: WARNING: $running container(s) already running: the machine is not quiet" >&2
  SDK_WS_PY=$(bench/setup_sdk_workspace.sh | tail -n 1) || die "bench/setup_sdk_workspace.sh failed"
  [ -x "$SDK_WS_PY" ] || die "no Python with openhands-workspace ($SDK_WS_PY)"
}

environment() {
  local ohrun_version commit dirty server_version docker_version python_version ws_version
  ohrun_version=$("$OHRUN" --version)
  commit=$(git rev-parse --short HEAD)
  dirty=$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock | wc -l)
  server_version=$("$MANAGED_PY" -c 'import importlib.metadata as m; print(m.version("openhands-agent-server"))')
  ws_version=$("$SDK_WS_PY" -c 'import importlib.metadata as m; print(m.version("openhands-workspace"))')
  docker_version=$(docker version --format '{{.Server.Version}}')
  python_version=$("$MANAGED_PY" --version 2>&1)
  {
    echo "# Issue H benchmarks"
    echo
    echo "| what | value |"
    echo "|---|---|"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| ohrun | $ohrun_version (release build) |"
    echo "| git commit | $commit$([ "$dirty" != 0 ] && echo " + $dirty uncommitted change(s) in src/ or Cargo.*") |"
    echo "| agent-server | $server_version (managed venv; image $IMAGE, $(docker image inspect -f '{{.Id}}' "$IMAGE" | cut -c8-19)) |"
    echo "| openhands-workspace (SDK DockerWorkspace) | $ws_version |"
    echo "| Docker engine | $docker_version |"
    echo "| Python | $python_version |"
    echo "| rustc | $(rustc --version) |"
    echo "| machine | $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), kernel $(uname -r) |"
    echo "| load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |"
    echo "| command | \`bench/run_all.sh\` (BENCH_RUNS=$RUNS) |"
  } > "$OUT/00-environment.md"
  cat "$OUT/00-environment.md" >&2
}

# ---------------------------------------------------------------------------------------------------------
# The parts.
part_plan() {
  run_part plan "ohrun plan at scale: 1,000 / 10,000 / 100,000 runs" "bench/plan.sh" \
    env PLAN_MARKDOWN="$OUT/plan.hyperfine.md" bash -c 'bench/plan.sh >&2 && sed -E "s#/tmp/tmp\.[A-Za-z0-9]+/##g" "$PLAN_MARKDOWN"'
}

part_scale() {
  run_part scale "Scale: N concurrent runs in one process (simulated agent-server)" \
    "SCALE_NS=\"${SCALE_NS:-100 1000 10000}\" SCALE_REPS=${SCALE_REPS:-3} python3 bench/scale.py" \
    env SCALE_NS="${SCALE_NS:-100 1000 10000}" SCALE_REPS="${SCALE_REPS:-3}" python3 bench/scale.py
}

part_seed() {
  run_part seed "(a) The seed job attached to a running server: ohrun kind: remote vs the SDK" \
    "BENCH_RUNS=$RUNS $MANAGED_PY bench/seed_vs_sdk.py" \
    env BENCH_RUNS="$RUNS" "$MANAGED_PY" bench/seed_vs_sdk.py
}

part_docker_sdk() {
  run_part docker_sdk "(b) Provisioning themselves: ohrun kind: docker vs the SDK's DockerWorkspace" \
    "BENCH_RUNS=$RUNS \$(bench/setup_sdk_workspace.sh) bench/docker_vs_sdk.py" \
    env BENCH_RUNS="$RUNS" "$SDK_WS_PY" bench/docker_vs_sdk.py
}

part_matrix_sdk() {
  run_part matrix_sdk "(c) A 12-run matrix: ohrun --jobs 4 vs the SDK with a thread pool of 4" \
    "BENCH_RUNS=$RUNS $MANAGED_PY bench/matrix_vs_sdk.py" \
    env BENCH_RUNS="$RUNS" "$MANAGED_PY" bench/matrix_vs_sdk.py
}

part_batch() {
  run_part batch "Batches: ohrun's own cost per run (12 and 100 runs), and a batch against single runs" \
    "$MANAGED_PY bench/batch_overhead.py" \
    "$MANAGED_PY" bench/batch_overhead.py
}

part_server_bound() {
  run_part server_bound "A batch on one server: 12 and 48 runs at once against the server's floor (issue M item 2)" \
    "$MANAGED_PY bench/server_bound.py" \
    "$MANAGED_PY" bench/server_bound.py
}

part_docker_local() {
  run_part docker_local "The seed job on the docker and the local sandbox" \
    "bench/docker_vs_local.sh ${DOCKER_LOCAL_RUNS:-3}" \
    bench/docker_vs_local.sh "${DOCKER_LOCAL_RUNS:-3}"
}

# A 12-run local batch (issue H item 2), --jobs 4: plain (--prefetch 0: each run starts its server in its
# place), --prefetch 2 (the default at --jobs 4: two more runs start theirs meanwhile), and one shared
# server (`sandbox.share: batch`). bench/local_batch.py takes each as NAME='FLAGS|SANDBOX_KEYS'.
LOCAL_BATCH_VARIANTS=("plain=--prefetch 0|" "prefetch=--prefetch 2|" "share=--prefetch 0|share: batch")
LOCAL_BATCH_FILLED_IN=1
part_verify() {
  run_part verify "What verification costs a run: none, shared, fresh, shared + judge (issue J)" \
    "BENCH_RUNS=$RUNS python3 bench/verify_cost.py" \
    env BENCH_RUNS="$RUNS" python3 bench/verify_cost.py
}

part_html() {
  run_part html "report.html of a 1,000-run x 200-event batch in headless Chromium (issue I)" \
    "python3 bench/html_scale.py" \
    python3 bench/html_scale.py
}

part_local_batch() {
  wanted local_batch || return 0
  if [ "$LOCAL_BATCH_FILLED_IN" != 1 ]; then
    PLACEHOLDERS+=("local_batch: the variants of plain vs --prefetch vs share: batch are a guess from README.md, not yet confirmed (bench/run_all.sh, part_local_batch)")
  fi
  run_part local_batch "A 12-run local batch: plain vs --prefetch vs sandbox.share: batch" \
    "BENCH_RUNS=${LOCAL_BATCH_RUNS:-2} python3 bench/local_batch.py $(printf "'%s' " "${LOCAL_BATCH_VARIANTS[@]}")" \
    env BENCH_RUNS="${LOCAL_BATCH_RUNS:-2}" python3 bench/local_batch.py "${LOCAL_BATCH_VARIANTS[@]}"
}
# <<< TO BE FILLED IN

# >>> HOOK (first install; the install helper may refine it): `ohrun setup local` into an empty HOME, so an
# empty ohrun, uv and pip cache: everything from PyPI. One line per installer in FIRST_INSTALL_INSTALLERS.
first_install() {
  echo "| installer | whole install (\`ohrun setup local\`, empty HOME and caches) | exit |"
  echo "|---|---|---|"
  local installer tmp start took rc
  for installer in ${FIRST_INSTALL_INSTALLERS:-uv}; do
    tmp=$(mktemp -d /tmp/ohrun-first-install.XXXXXX)
    mkdir -p "$tmp/home"
    start=$(date +%s.%N)
    env -u OHRUN_HOME -u XDG_CACHE_HOME -u UV_CACHE_DIR -u PIP_CACHE_DIR HOME="$tmp/home" \
      OHRUN_INSTALLER="$installer" "$OHRUN" setup local >&2
    rc=$?
    took=$(echo "$(date +%s.%N) - $start" | bc -l)
    printf '| %s | %.1f s | %s |\n' "$installer" "$took" "$rc"
    rm -rf "$tmp"
    [ "$rc" = 0 ] || return 1
  done
}
part_first_install() {
  run_part first_install "Installing the agent-server (first run on a fresh machine)" \
    "HOME=\$(mktemp -d) OHRUN_INSTALLER=… ohrun setup local" first_install
}
# <<< HOOK

# ---------------------------------------------------------------------------------------------------------
# Nothing may be left running: the benchmarks' containers (DockerWorkspace's agent-server-*, ohrun's with a
# bench job label) and any process of the kinds they start that was not there before the harness began.
PATTERN="ohrun rehearse|sim_agent_server|bench/sdk_|openhands.agent_server|tmux"
BEFORE=$(pgrep -f "$PATTERN" | sort)
leftovers() {
  local containers procs
  containers=$( { docker ps -a --filter "name=^agent-server-" --format '{{.ID}} {{.Names}}';
                  docker ps -a --format '{{.ID}} {{.Label "dev.ohrun.job"}}' | grep -E ' (bench-|facts-docker$|facts-local$)'; } || true)
  sleep 2  # what is shutting down (tmux servers after their agent-server) gets there
  # Zombies (state Z) are not running: dead, waiting for init to reap them.
  procs=$(comm -13 <(echo "$BEFORE") <(pgrep -f "$PATTERN" | sort) | while read -r pid; do
            [ -n "$pid" ] && [ "$pid" != $$ ] && ps -o pid=,stat=,args= -p "$pid" | awk '$2 !~ /^Z/'; done || true)
  if [ -n "$containers" ] || [ -n "$procs" ]; then
    echo "run_all: error: left running (or started meanwhile by something else on the machine):" >&2
    [ -z "$containers" ] || echo "containers: $containers" >&2
    [ -z "$procs" ] || echo "processes: $procs" >&2
    return 1
  fi
}

preflight
environment
part_plan
part_scale
part_seed
part_docker_sdk
part_matrix_sdk
part_batch
part_server_bound
part_docker_local
part_local_batch
part_html
part_verify
part_first_install

leftovers || FAILED+=("leftovers")
TOTAL=$(( $(date +%s) - T0 ))
{
  cat "$OUT/00-environment.md"
  echo
  echo "Harness wall time: **$((TOTAL / 60)) min $((TOTAL % 60)) s** (build and preflight included)."
  echo
  echo "| part | wall | result |"
  echo "|---|---|---|"
  printf '%s\n' "${TIMES[@]}"
  for p in "${PLACEHOLDERS[@]}"; do echo; echo "**To confirm:** $p"; done
  for part in plan scale seed docker_sdk matrix_sdk batch server_bound docker_local local_batch html verify first_install; do
    [ -f "$OUT/$part.md" ] && { echo; cat "$OUT/$part.md"; }
  done
} > "$OUT/RESULTS.md"
echo >&2
echo "results: $OUT/RESULTS.md (and one .md/.log per part)" >&2
for p in "${PLACEHOLDERS[@]}"; do echo "run_all: TO CONFIRM: $p" >&2; done
echo "total wall time: $((TOTAL / 60)) min $((TOTAL % 60)) s" >&2
if [ ${#FAILED[@]} != 0 ]; then
  echo "run_all: FAILED parts: ${FAILED[*]}" >&2
  exit 1
fi
exit 0
}
