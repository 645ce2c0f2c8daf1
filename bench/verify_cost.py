"""What verification costs a run (issue J): the same one-step job on a local agent-server, interleaved, with
no checks, two command checks in the run's own sandbox (`shared`), the same checks in a fresh sandbox
(`fresh`: a second agent-server, setup again, the final patch applied), and a shared run with an LLM judge
(the scripted LLM). Per variant: the run's wall time, the verification's own time (run.json
`verification.duration_ms`) and what the run cost (the judge's call included). Medians with min–max over
BENCH_RUNS rounds. Needs target/release/ohrun and the managed agent-server (`ohrun setup local`)."""
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import die, require_ohrun  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_RUNS", "3"))

SETUP = """setup:
  - git init -q && git config user.email b@b && git config user.name b && echo base > base.txt && git add -A && git commit -qm base
"""
SCRIPT = """replies:
  - tool: terminal
    args: {command: 'echo 42 > answer.txt'}
  - tool: finish
    args: {message: wrote answer.txt}
  - tool: finish
    args: {message: '{"passed": true, "score": 1, "explanation": "answer.txt holds the answer"}'}
"""
CHECKS = """    - name: answer
      run: test "$(cat answer.txt)" = 42
    - name: base kept
      run: test -f base.txt
"""
VARIANTS = {
    "none": "",
    "shared": "verify:\n  checks:\n" + CHECKS,
    "fresh": "verify:\n  mode: fresh\n  checks:\n" + CHECKS,
    "shared + judge": "verify:\n  checks:\n" + CHECKS
    + "    - name: explains\n      judge:\n        criteria: [The final message names the file it wrote.]\n",
}


def one(ohrun, work, name, verify):
    slug = name.replace(" + ", "-")
    (work / "script.yaml").write_text(SCRIPT)
    job = work / f"{slug}.yaml"
    job.write_text(f"name: {slug}\nsandbox: {{kind: local}}\nllm: {{model: m}}\n{SETUP}"
                   f"steps:\n  - message: Write the answer.\n{verify}rehearsal: script.yaml\n")
    start = time.time()
    out = subprocess.run([ohrun, "run", "--rehearse", "-q", str(job)], cwd=work, capture_output=True, text=True)
    wall = time.time() - start
    if out.returncode != 0:
        die(f"{name}: exit {out.returncode}\n{out.stderr}")
    report = json.loads((work / "ohrun-reports" / slug / slug / "run.json").read_text())
    v = report.get("verification") or {}
    return wall, (v.get("duration_ms") or 0) / 1000, report["totals"]["cost"]


def fmt(values, unit):
    med = statistics.median(values)
    return f"{med:.2f}{unit} ({min(values):.2f}–{max(values):.2f})"


def main():
    ohrun = require_ohrun()
    results = {name: [] for name in VARIANTS}
    for _ in range(ROUNDS):
        for name, verify in VARIANTS.items():
            with tempfile.TemporaryDirectory() as d:
                results[name].append(one(ohrun, pathlib.Path(d), name, verify))
    base = statistics.median(w for w, _, _ in results["none"])
    print(f"{ROUNDS} rounds, interleaved; local agent-server, scripted LLM; medians (min–max).\n")
    print("| variant | run wall | of which verification | over no checks | run cost |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        walls = [w for w, _, _ in rows]
        extra = statistics.median(walls) - base
        print(f"| {name} | {fmt(walls, ' s')} | {fmt([v for _, v, _ in rows], ' s')} | "
              f"{extra:+.2f} s | ${statistics.median(c for _, _, c in rows):.4f} |")


if __name__ == "__main__":
    main()
