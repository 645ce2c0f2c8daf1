"""Benchmark (issue M item 2): is a batch on one agent-server bound by the server or by ohrun? For 12 and
48 runs at once (`--jobs N`, every run `kind: remote` on ONE agent-server, the scripted LLM, two steps
each), the batch's wall time against its physical floor:

    floor = max(server's own CPU ÷ 1 core, (server's own + its commands' CPU) ÷ cores) + one run's latency

The agent-server is one Python process: its own work (HTTP, WebSocket, the agent loop of every
conversation) holds the GIL, so it cannot use more than one core however many runs there are; the
commands it runs (bash, git) can use every core. "one run's latency" is the median wall of the same job's
single run, alone on the server: the last run to start cannot end sooner. The rest of the machine's busy
time during the batch is shown beside it: ohrun itself, and the other processes (the agent's terminal
runs in tmux, which is nobody's child; the kernel).

Three repetitions per size, interleaved, median (min–max). Run with the managed venv's Python:
    ~/.cache/ohrun/agent-server-1.58.2/bin/python bench/server_bound.py
    BENCH_SERVER_SIZES=12,48 BENCH_REPS=3 BENCH_OHRUN=/path/to/ohrun …
"""
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import KEY, machine_busy, start_server, stop_server, watch, write_matrix_job

ROOT = pathlib.Path(__file__).resolve().parent.parent
OHRUN = os.environ.get("BENCH_OHRUN") or ROOT / "target/release/ohrun"
SIZES = [int(n) for n in os.environ.get("BENCH_SERVER_SIZES", "12,48").split(",")]
REPS = int(os.environ.get("BENCH_REPS", "3"))
CORES = os.cpu_count()


def server_cpu(pid):
    """(own CPU s, CPU s of the children it waited for) of the agent-server so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def ohrun(work, args):
    """Runs ohrun to its end: (wall s, its CPU s)."""
    start = time.time()
    proc = subprocess.Popen([OHRUN, "-q", "run", "--rehearse", *args], cwd=work, env=dict(os.environ, KEY=KEY),
                            stdout=subprocess.DEVNULL)
    _, cpu = watch(proc)
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"bench: error: ohrun {' '.join(map(str, args))} exited {proc.returncode} (in {work})")
    return wall, cpu


def measure(server, url, runs, single):
    """One batch of `runs` at once; the figures of one row."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="ohrun-bound-"))
    job = write_matrix_job(work, url, runs, "bound")
    (own0, kids0), busy0 = server_cpu(server.pid), machine_busy()
    wall, client_cpu = ohrun(work, ["--jobs", str(runs), job])
    (own1, kids1), busy1 = server_cpu(server.pid), machine_busy()
    summary = json.load(open(work / "ohrun-reports/bound/summary.json"))
    if summary["totals"]["by_status"] != {"succeeded": runs}:
        sys.exit(f"bench: error: not every run succeeded: {summary['totals']['by_status']}")
    own, kids, busy = own1 - own0, kids1 - kids0, busy1 - busy0
    floor = max(own, (own + kids) / CORES) + single
    return {"wall": wall, "floor": floor, "own": own / runs, "kids": kids / runs, "client": client_cpu / runs,
            "other": max(0.0, busy - own - kids - client_cpu) / runs, "busy": busy / (wall * CORES)}


def single_latency(server, url):
    """The median wall of one run alone on the server (three runs)."""
    walls = []
    for _ in range(3):
        work = pathlib.Path(tempfile.mkdtemp(prefix="ohrun-bound-1-"))
        walls.append(ohrun(work, [write_matrix_job(work, url, 1, "bound")])[0])
    return statistics.median(walls)


def fmt(xs, scale=1.0, digits=2, unit=" s"):
    xs = [x * scale for x in xs]
    return f"{statistics.median(xs):.{digits}f}{unit} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def main():
    server, url = start_server()
    try:
        single = single_latency(server, url)
        rows = {n: [] for n in SIZES}
        for _ in range(REPS):
            for n in SIZES:
                rows[n].append(measure(server, url, n, single))
    finally:
        stop_server(server)
    print(f"One agent-server, `kind: remote`, --jobs = runs (all at once), the scripted LLM, two steps per run; "
          f"{REPS} repetitions, median (min–max); {CORES} cores; one run alone: {single:.2f} s (median of 3)\n")
    print("| runs | batch wall | floor | wall ÷ floor | server's own CPU per run | its commands' CPU per run | "
          "ohrun CPU per run | other CPU per run (tmux, bash, kernel) | cores busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, rs in rows.items():
        col = lambda k: [r[k] for r in rs]  # noqa: E731
        ratio = [r["wall"] / r["floor"] for r in rs]
        print(f"| {n} | {fmt(col('wall'))} | {fmt(col('floor'))} | {fmt(ratio, unit='×')} | {fmt(col('own'))} | "
              f"{fmt(col('kids'))} | {fmt(col('client'), 1000, 1, ' ms')} | {fmt(col('other'))} | "
              f"{fmt(col('busy'), 100, 0, ' %')} |")


if __name__ == "__main__":
    main()
