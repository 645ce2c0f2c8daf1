"""Benchmark (issue H, item 2): a 12-run batch on `kind: local` sandboxes (each run's own agent-server,
started by ohrun from its managed venv), `ohrun -q run --rehearse --jobs 4`, in variants that differ by
command-line flags and by keys added to the job's `sandbox:` — the plain batch, pipelined provisioning
(`--prefetch`), one shared server (`sandbox.share: batch`) — interleaved, BENCH_RUNS (3) times each.

Usage: python3 bench/local_batch.py NAME='FLAGS|SANDBOX_KEYS' ...
  e.g. plain='|'  prefetch='--prefetch 2|'  share='|share: batch'
(FLAGS split on spaces; SANDBOX_KEYS is YAML flow-mapping content added inside `sandbox: {kind: local, …}`).

Per batch: wall, ohrun's own CPU and that of the children it reaped (wait4: the agent-servers it starts,
when their process tree is ohrun's), peak RSS, provisioning per run (run.json, median and max),
the machine's busy CPU seconds. Needs target/release/ohrun and the managed venv (`ohrun setup local`).
"""
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (TWO_STEP_SCRIPT, die, machine_busy, require_ohrun, run_watched, summarize)  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SIZE = int(os.environ.get("BENCH_MATRIX_RUNS", "12"))
JOBS = int(os.environ.get("BENCH_JOBS", "4"))


def batch(flags, keys):
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-local-"))
    (work / "script.yaml").write_text(TWO_STEP_SCRIPT)
    axis = ", ".join(str(n) for n in range(1, SIZE + 1))
    extra = f", {keys}" if keys else ""
    (work / "job.yaml").write_text(
        f"name: local-batch\nmatrix:\n  n: [{axis}]\nsandbox: {{kind: local{extra}}}\nllm: {{model: m}}\n"
        "steps:\n  - message: First, for run {{ n }}.\n  - message: Second.\nrehearsal: script.yaml\n")
    busy = machine_busy()
    wall, cpu, rss, proc = run_watched([require_ohrun(), "-q", "run", "--rehearse", "--jobs", str(JOBS), *flags,
                                        work / "job.yaml"], cwd=work)
    busy = machine_busy() - busy
    if proc.returncode != 0:
        die(f"the batch ({' '.join(flags)} {keys}) failed (exit {proc.returncode}); see {work}")
    out = work / "ohrun-reports/local-batch"
    summary = json.load(open(out / "summary.json"))
    if summary["totals"]["by_status"] != {"succeeded": SIZE}:
        die(f"the batch ({' '.join(flags)} {keys}): {summary['totals']['by_status']}; see {work}")
    provision = [(json.load(open(out / r["report"]))["sandbox"].get("provision_ms") or 0) / 1000 for r in summary["runs"]]
    shutil.rmtree(work, ignore_errors=True)
    return {"wall": wall, "cpu": proc.cpu_own, "cpu_children": cpu - proc.cpu_own, "rss": rss, "prov_med": statistics.median(provision), "prov_max": max(provision),
            "busy": busy}


def main():
    variants = []
    for arg in sys.argv[1:]:
        name, _, spec = arg.partition("=")
        flags, _, keys = spec.partition("|")
        variants.append((name, flags.split(), keys.strip()))
    if not variants:
        die("no variants given (e.g. plain='|')")
    require_ohrun()
    results = {name: [] for name, _, _ in variants}
    for i in range(RUNS):
        for name, flags, keys in variants:
            results[name].append(batch(flags, keys))
            print(f"  {name} batch {i + 1}: {results[name][-1]['wall']:.1f} s", file=sys.stderr)
    print(f"{SIZE}-run batch on local sandboxes, --jobs {JOBS}, the scripted LLM, {RUNS} batches each, interleaved\n")
    print("| variant | flags / sandbox keys | batch wall | ohrun CPU (its own) | its children's CPU (the servers it started) | ohrun peak RSS | provision per run, median | slowest provision | machine busy (CPU s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, flags, keys in variants:
        rows = results[name]
        print(f"| {name} | `{' '.join(flags) or '—'}` / `{keys or '—'}` | {summarize((r['wall'] for r in rows), ' s')} | "
              f"{summarize((r['cpu'] for r in rows), ' s')} | {summarize((r['cpu_children'] for r in rows), ' s')} | {summarize((r['rss'] / 1024 for r in rows), ' MiB', 1)} | "
              f"{summarize((r['prov_med'] for r in rows), ' s')} | {summarize((r['prov_max'] for r in rows), ' s')} | "
              f"{summarize((r['busy'] for r in rows), ' s', 1)} |")


if __name__ == "__main__":
    main()
