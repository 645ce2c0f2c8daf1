#!/usr/bin/env bash
# A venv with the SDK's DockerWorkspace (openhands-workspace) at the agent-server's version, 1.58.2, for
# bench/docker_vs_sdk.py — ohrun's managed venv has the SDK but not openhands-workspace. Installed from
# PyPI with the checked-in lock as constraints (the same versions of everything the agent-server has) and
# bytecode compiled, like ohrun's venv, so the SDK's start-up is not slowed by compiling it every run.
# Idempotent; prints the venv's python on its last line. Location: $OHRUN_BENCH_HOME (~/.cache/ohrun-bench).
set -euo pipefail
# No network beyond PyPI: litellm reads its bundled cost map instead of fetching one.
export LITELLM_LOCAL_MODEL_COST_MAP=True OPENHANDS_SUPPRESS_BANNER=1
cd "$(dirname "$0")/.."
version=1.58.2
venv=${OHRUN_BENCH_HOME:-$HOME/.cache/ohrun-bench}/sdk-workspace-$version
managed=${OHRUN_HOME:-$HOME/.cache/ohrun}/agent-server-$version
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import openhands.workspace, openhands.sdk' 2>/dev/null \
   && [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("openhands-workspace"))')" = "$version" ]; then
  echo "$venv/bin/python"
  exit 0
fi
# The same interpreter as ohrun's managed venv (Python >= 3.12), else python3 from PATH.
base=python3
if [ -f "$managed/pyvenv.cfg" ]; then
  home=$(sed -n 's/^home = //p' "$managed/pyvenv.cfg")
  [ -x "$home/python3" ] && base=$home/python3
fi
"$base" -c 'import sys; assert sys.version_info >= (3, 12), sys.version' \
  || { echo "bench: error: $base is older than Python 3.12" >&2; exit 1; }
uv=$(ls "${OHRUN_HOME:-$HOME/.cache/ohrun}"/uv-*/bin/uv 2>/dev/null | tail -n 1 || true)
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
echo "bench: installing openhands-workspace==$version into $venv" >&2
if [ -n "$uv" ]; then
  "$uv" venv -q --python "$base" "$venv" >&2
  VIRTUAL_ENV=$venv "$uv" pip install -q --compile-bytecode -c src/backend/agent-server.lock "openhands-workspace==$version" >&2
else
  "$base" -m venv "$venv" >&2
  "$venv/bin/pip" install -q -c src/backend/agent-server.lock "openhands-workspace==$version" >&2
  "$venv/bin/python" -m compileall -q "$venv/lib" >&2 || true
fi
"$venv/bin/python" -c 'import openhands.workspace, openhands.sdk' \
  || { echo "bench: error: openhands-workspace did not install into $venv" >&2; exit 1; }
echo "$venv/bin/python"
