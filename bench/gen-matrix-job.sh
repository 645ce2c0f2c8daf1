#!/usr/bin/env bash
# Writes a job whose matrix expands to 100 x 100 = 10,000 runs, with templates in the setup and the
# message, to stdout. Used by bench/plan.sh.
set -euo pipefail
{
  echo "name: bench-matrix"
  echo "vars: { branch: main }"
  echo "matrix:"
  printf "  repo: ["; for i in $(seq 1 100); do printf "org/repo-%d, " "$i"; done; echo "]"
  printf "  python: ["; for i in $(seq 1 100); do printf "\"3.%d\", " "$i"; done; echo "]"
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
