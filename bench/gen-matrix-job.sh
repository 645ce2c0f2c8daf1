#!/usr/bin/env bash
# Writes a job whose matrix expands to A x B runs (default 100 x 100 = 10,000), with templates in the
# setup, the message and the report directory, to stdout. Used by bench/plan.sh.
set -euo pipefail
a=${1:-100}
b=${2:-100}
{
  echo "name: bench-matrix"
  echo "vars: { branch: main }"
  echo "matrix:"
  printf "  repo: ["; for i in $(seq 1 "$a"); do printf "org/repo-%d, " "$i"; done; echo "]"
  printf "  python: ["; for i in $(seq 1 "$b"); do printf "\"3.%d\", " "$i"; done; echo "]"
  cat <<'YAML'
sandbox: { kind: local }
llm: { model: openai/gpt-4o-mini, api_key: "${LLM_API_KEY}" }
setup:
  - run: git clone --branch {{ branch }} https://github.com/{{ repo }} repo
  - pip install python=={{ python }}
steps:
  - message: "Fix the failing tests of {{ repo }} on Python {{ python }}."
    timeout: 10m
report: { dir: "out/{{ run.id }}" }
YAML
}
