"""Soak: N runs (default 200) of one matrix job in ONE ohrun process against one real agent-server and
the scripted LLM, four at a time. As each run ends (ohrun's `--json` prints a line), the ohrun process's
open file descriptors, threads and resident memory are read from /proc; at the end every run's evidence
is checked (run.json ended and succeeded, events.jsonl with events, the summary listing it).

Run with the managed venv's Python (it starts the agent-server):
    ~/.cache/ohrun/agent-server-1.58.2/bin/python bench/soak.py        # SOAK_RUNS=200 by default
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from benchlib import KEY, start_server, stop_server, write_matrix_job

ROOT = pathlib.Path(__file__).resolve().parent.parent
OHRUN = ROOT / "target/release/ohrun"
RUNS = int(os.environ.get("SOAK_RUNS", "200"))


def sample(pid):
    """(open fds, threads, RSS in KiB) of a live process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return fds, int(status["Threads"]), int(status["VmRSS"].split()[0])


def main():
    server, url = start_server()
    work = pathlib.Path(tempfile.mkdtemp())
    try:
        job = write_matrix_job(work, url, RUNS, "soak")
        start = time.time()
        proc = subprocess.Popen([OHRUN, "-q", "run", "--rehearse", "--json", "--jobs", "4", job], cwd=work,
                                env=dict(os.environ, KEY=KEY), stdout=subprocess.PIPE, text=True)
        samples = []
        for line in proc.stdout:
            if json.loads(line).get("type") == "run":
                samples.append(sample(proc.pid))
        proc.wait()
        wall = time.time() - start
        assert proc.returncode == 0, f"ohrun exited {proc.returncode}"
        out = work / "ohrun-reports/soak"
        summary = json.load(open(out / "summary.json"))
        assert summary["totals"]["by_status"] == {"succeeded": RUNS}, summary["totals"]
        complete = 0
        for r in summary["runs"]:
            report = json.load(open(out / r["report"]))
            events = (out / r["id"] / "attempt-1" / "events.jsonl").read_text().splitlines()
            served = (work / "ws" / r["id"] / "served.log").read_text()
            if report["status"] == "ended" and report["outcome"]["class"] == "succeeded" and len(events) > 10 \
                    and served == "first\nsecond\n":
                complete += 1
    finally:
        stop_server(server)
    marks = sorted({i for i in (0, 9, len(samples) // 2, len(samples) - 1) if i < len(samples)})
    print(f"{RUNS} runs, --jobs 4, one process: {wall:.1f} s; evidence complete for {complete} of {RUNS}\n")
    print("| after run | open fds | threads | RSS |")
    print("|---|---|---|---|")
    for i in marks:
        fds, threads, rss = samples[i]
        print(f"| {i + 1} | {fds} | {threads} | {rss / 1024:.1f} MiB |")
    fds = [s[0] for s in samples]
    print(f"\nopen fds: min {min(fds)}, max {max(fds)}; RSS first {samples[0][2] / 1024:.1f} MiB, "
          f"last {samples[-1][2] / 1024:.1f} MiB, max {max(s[2] for s in samples) / 1024:.1f} MiB")
    sys.exit(0 if complete == RUNS else 1)


if __name__ == "__main__":
    main()
