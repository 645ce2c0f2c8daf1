"""Benchmark: ohrun's own cost of running a batch — at 12 and 100 runs — against one real agent-server and
the scripted LLM, and the batch's wall time against the same runs run one by one (one `ohrun` process
each, `--filter ID`).

For each batch (`ohrun -q run --rehearse --jobs J`):
  - wall: the process, start to exit;
  - ideal: the makespan the runs' own durations (run.json, started_at → ended_at) allow with J slots,
    greedy in plan order — what a scheduler with no cost of its own would take;
  - overhead per run = (wall − ideal) / runs: ohrun's own time outside the runs (start-up, planning,
    claiming directories, rollups after every run, exit), spread over the runs;
  - in a run, between its phases: its duration minus provisioning, setup commands and steps, median —
    creating and deleting the conversation (server calls) and writing run.json;
  - ohrun's CPU time per run, and its peak RSS.

Run with the managed venv's Python (it starts the agent-server from it):
    ~/.cache/ohrun/agent-server-1.58.2/bin/python bench/batch_overhead.py
"""
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

import math

from benchlib import KEY, cpu_of, machine_busy, start_server, stop_server, ts, watch, write_matrix_job

ROOT = pathlib.Path(__file__).resolve().parent.parent
# BENCH_OHRUN=PATH: another ohrun binary (the one before a change), measured the same way.
OHRUN = os.environ.get("BENCH_OHRUN") or ROOT / "target/release/ohrun"
JOBS = int(os.environ.get("BENCH_JOBS", "4"))
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "12,100").split(",")]
def ohrun(work, args):
    start = time.time()
    proc = subprocess.Popen([OHRUN, "-q", "run", "--rehearse", *args], cwd=work, env=dict(os.environ, KEY=KEY))
    rss, cpu = watch(proc)
    wall = time.time() - start
    assert proc.returncode == 0, f"ohrun {args} failed"
    return wall, cpu, rss


def makespan(durations, slots):
    """Greedy list scheduling in order: each run takes the slot that frees first."""
    free = [0.0] * slots
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def server_time(r):
    """The seconds a run spent waiting on the server: provisioning, setup commands, steps."""
    return (r["sandbox"].get("provision_ms") or 0) / 1000 + sum(s["duration_ms"] for s in r["setup"]) / 1000 \
        + sum((s.get("duration_ms") or 0) for s in r["steps"]) / 1000


def batch(server, url, runs, diffs=True):
    work = pathlib.Path(tempfile.mkdtemp())
    job = write_matrix_job(work, url, runs, "bench", diffs)
    server_cpu, busy = cpu_of(server.pid), machine_busy()
    wall, cpu, rss = ohrun(work, ["--jobs", str(JOBS), job])
    server_cpu, busy = cpu_of(server.pid) - server_cpu, machine_busy() - busy
    out = work / "ohrun-reports/bench"
    summary = json.load(open(out / "summary.json"))
    assert summary["totals"]["by_status"] == {"succeeded": runs}, summary["totals"]
    reports = [json.load(open(out / r["report"])) for r in summary["runs"]]
    durations = [ts(r["ended_at"]) - ts(r["started_at"]) for r in reports]
    ideal = makespan(durations, JOBS)
    in_run = statistics.median(d - server_time(r) for d, r in zip(durations, reports))
    singles, single_cpu = [], cpu_of(server.pid)
    for r in summary["runs"]:
        single_wall, _, _ = ohrun(work, ["--filter", r["id"], "--out", f"single/{r['id']}", job])
        singles.append(single_wall)
    single_cpu = (cpu_of(server.pid) - single_cpu) / runs
    return {
        "runs": runs, "label": runs if diffs else f"{runs}, diffs off", "wall": wall, "ideal": ideal, "sum_runs": sum(durations), "in_run": in_run,
        "overhead": (wall - ideal) / runs, "cpu": cpu / runs, "rss": rss / 1024, "singles": sum(singles),
        "single_median": statistics.median(singles), "single_max": max(singles),
        "server_cpu": server_cpu, "server_cpu_single": single_cpu, "busy": busy / (wall * os.cpu_count()),
        "bound": 1.6 * max(singles) * math.ceil(runs / JOBS),
    }


def main():
    server, url = start_server()
    try:
        rows = [batch(server, url, n) for n in SIZES]
        # What the workspace diffs cost between a run's phases: the smallest batch again without them.
        rows.append(batch(server, url, min(SIZES), diffs=False))
    finally:
        stop_server(server)
    print(f"--jobs {JOBS}, one agent-server, the scripted LLM, two steps per run\n")
    print("| runs | batch wall | ideal (runs' own durations, J slots) | overhead per run | in a run, between phases (conversation create + delete, run.json; median) | ohrun CPU per run | ohrun peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['wall']:.2f} s | {r['ideal']:.2f} s | {r['overhead'] * 1000:.0f} ms | "
              f"{r['in_run'] * 1000:.0f} ms | {r['cpu'] * 1000:.1f} ms | {r['rss']:.1f} MiB |")
    print("\n| runs | batch wall | Σ single runs (one process each) | single run, median | Σ run durations in the batch |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['wall']:.2f} s | {r['singles']:.2f} s | {r['single_median']:.2f} s | {r['sum_runs']:.2f} s |")
    print("\n| runs | batch wall | 1.6 × slowest single run × ceil(runs / J) | agent-server CPU during the batch | its CPU per run, in the batch / alone | the machine's cores busy during the batch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['wall']:.2f} s | {r['bound']:.2f} s | {r['server_cpu']:.2f} s ({r['server_cpu'] / r['wall'] * 100:.0f} % of one core) | "
              f"{r['server_cpu'] / r['runs']:.2f} s / {r['server_cpu_single']:.2f} s | {r['busy'] * 100:.0f} % |")


if __name__ == "__main__":
    main()
