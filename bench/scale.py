#!/usr/bin/env python3
"""Scale benchmark (issue H): N concurrent runs of one job in ONE ohrun process against the simulated
agent-server (examples/sim_agent_server.rs: the same REST + WebSocket protocol, no agent or LLM behind it),
for N = 10, 100, 500, 1000 (or SCALE_NS="10 100"). Each run has two steps; each step is SCALE_ACTIONS
(default 5) action/observation pairs over SCALE_STEP (default 2s). Prints, per N: ohrun's wall time, peak
RSS, CPU (total and per run), most open fds and threads seen, errors (runs that did not succeed), and the
simulator's own CPU. Needs only Python 3 and cargo; builds both binaries in release mode first.

    python3 bench/scale.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OHRUN = os.path.join(ROOT, "target/release/ohrun")
SIM = os.path.join(ROOT, "target/release/examples/sim_agent_server")
KEY = "sim-session-key"


def build():
    if os.environ.get("BENCH_NO_BUILD"):  # bench/run_all.sh has built both, once, before every part
        for path in (OHRUN, SIM):
            if not os.access(path, os.X_OK):
                sys.exit(f"bench: error: {path} is missing")
        return
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--example", "sim_agent_server"], cwd=ROOT, check=True)


def start_sim(step, actions):
    sim = subprocess.Popen([SIM, "--key", KEY, "--step-time", step, "--actions", str(actions)], stdout=subprocess.PIPE, text=True)
    url = sim.stdout.readline().strip()
    return sim, url


def job(work, url, runs):
    values = ", ".join(str(n) for n in range(1, runs + 1))
    path = os.path.join(work, "job.yaml")
    with open(path, "w") as f:
        f.write(
            f"name: scale\nmatrix:\n  n: [{values}]\nsandbox:\n  kind: remote\n  url: {url}\n"
            f"  session_key: ${{SIM_SESSION_KEY}}\n  working_dir: /sim/{{{{ run.id }}}}\n"
            "llm: {model: sim, api_key: \"${SIM_LLM_KEY}\"}\n"
            "steps:\n  - message: First, for run {{ n }}.\n  - message: Second.\n"
            + os.environ.get("SCALE_JOB_EXTRA", "")
        )
    return path


def proc_stat(pid):
    """(open fds, threads) of a live process, or None."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("Threads:")).split()[1])
        return fds, threads
    except (OSError, StopIteration):
        return None


def cpu_of(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(n, step, actions):
    sim, url = start_sim(step, actions)
    sim_cpu0 = cpu_of(sim.pid)
    with tempfile.TemporaryDirectory() as work:
        path = job(work, url, n)
        env = dict(os.environ, SIM_SESSION_KEY=KEY, SIM_LLM_KEY="unused", CI="true")
        started = time.monotonic()
        proc = subprocess.Popen([OHRUN, "-q", "run", path, "--jobs", str(n)], cwd=work, env=env)
        fds = threads = 0
        while True:
            # wait4 gives the child's own CPU and peak RSS once it has exited.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            s = proc_stat(proc.pid)
            if s:
                fds, threads = max(fds, s[0]), max(threads, s[1])
            time.sleep(0.05)
        wall = time.monotonic() - started
        code = os.waitstatus_to_exitcode(status)
        summary = json.load(open(os.path.join(work, "ohrun-reports/scale/summary.json")))
    sim_cpu = cpu_of(sim.pid) - sim_cpu0
    sim.terminate()
    sim.wait()
    return wall, code, usage, summary, fds, threads, sim_cpu


def main():
    ns = [int(n) for n in os.environ.get("SCALE_NS", "10 100 500 1000").split()]
    step = os.environ.get("SCALE_STEP", "2s")
    actions = int(os.environ.get("SCALE_ACTIONS", "5"))
    build()
    print(f"two steps per run, each {actions} action/observation pairs over {step}; one ohrun process, --jobs N")
    print("| N | wall | ohrun peak RSS | ohrun CPU | CPU per run | most fds | most threads | errors | simulator CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        wall, code, usage, summary, fds, threads, sim_cpu = measure(n, step, actions)
        cpu = usage.ru_utime + usage.ru_stime
        peak_mib = usage.ru_maxrss / 1024
        errors = n - summary["totals"]["by_status"].get("succeeded", 0)
        print(f"| {n} | {wall:.1f} s | {peak_mib:.1f} MiB | {cpu:.2f} s | {1000 * cpu / n:.1f} ms | {fds} | {threads} | {errors} (exit {code}) | {sim_cpu:.2f} s |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
