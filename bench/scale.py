#!/usr/bin/env python3
"""Scale benchmark (issues H and M item 3): N concurrent runs of one job in ONE ohrun process against the
simulated agent-server (examples/sim_agent_server.rs, its own process: it holds a socket per run too), for
N in SCALE_NS (default "100 1000 10000"), SCALE_REPS times each (default 3, the Ns interleaved within each
repetition). Each run has two steps; each step is SCALE_ACTIONS (default 5) action/observation pairs over
SCALE_STEP (default 10s: long enough that all N runs are under way at once — the simulator's most open
event sockets say whether they were). Per N it prints the median (min–max) of: ohrun's wall time, peak RSS,
CPU per run, descriptors per run at steady state (/proc/<pid>/fd sampled while every run's event socket
was open), files created per run (everything under the batch directory), errors (runs that did not
succeed) and the simulator's CPU; then whether issue M's goals are met. With SCALE_STRACE_N (default 100;
0 for none) one more batch of that many runs under `strace -f -c` counts the file system calls per run.
Needs only Python 3 and cargo; builds both binaries in release mode first.

    python3 bench/scale.py
    SCALE_NS="10 100" SCALE_REPS=1 SCALE_STEP=2s python3 bench/scale.py
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_OHRUN=PATH: another ohrun binary (the one before a change), measured the same way.
OHRUN = os.environ.get("BENCH_OHRUN") or os.path.join(ROOT, "target/release/ohrun")
SIM = os.path.join(ROOT, "target/release/examples/sim_agent_server")
KEY = "sim-session-key"
FS_CALLS = "openat,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,fsync,fdatasync"


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


def sim_stats(url):
    req = urllib.request.Request(f"{url}/sim/stats", headers={"X-Session-API-Key": KEY})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)
    except OSError:
        return {"sockets": 0, "peak_sockets": 0}


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


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_of(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def files_under(path):
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(path))


def measure(n, step, actions, timeout):
    """One batch of n runs: a dict of what was measured."""
    sim, url = start_sim(step, actions)
    sim_cpu0 = cpu_of(sim.pid)
    with tempfile.TemporaryDirectory() as work:
        path = job(work, url, n)
        env = dict(os.environ, SIM_SESSION_KEY=KEY, SIM_LLM_KEY="unused", CI="true")
        started = time.monotonic()
        proc = subprocess.Popen([OHRUN, "-q", "run", path, "--jobs", str(n)], cwd=work, env=env)
        steady = []  # fds while every run's event socket was open
        most_fds = 0
        while True:
            # wait4 gives the child's own CPU and peak RSS once it has exited.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                proc.kill()
                continue
            fds = fd_count(proc.pid)
            if fds is not None:
                most_fds = max(most_fds, fds)
                if sim_stats(url)["sockets"] >= n:
                    steady.append(fds)
            time.sleep(0.2)
        wall = time.monotonic() - started
        code = os.waitstatus_to_exitcode(status)
        batch = os.path.join(work, "ohrun-reports/scale")
        summary = json.load(open(os.path.join(batch, "summary.json")))
        files = files_under(batch)
    peak_sockets = sim_stats(url)["peak_sockets"]
    sim_cpu = cpu_of(sim.pid) - sim_cpu0
    sim.terminate()
    sim.wait()
    return {
        "wall": wall,
        "code": code,
        "cpu_ms": 1000 * (usage.ru_utime + usage.ru_stime) / n,
        "rss_mib": usage.ru_maxrss / 1024,
        "errors": n - summary["totals"]["by_status"].get("succeeded", 0),
        "fds_per_run": statistics.median(steady) / n if steady else None,
        "most_fds": most_fds,
        "files_per_run": files / n,
        "peak_sockets": peak_sockets,
        "sim_cpu": sim_cpu,
    }


def fs_calls(n, step, actions):
    """File system calls per run (strace -f -c of one batch of n runs), by call."""
    sim, url = start_sim(step, actions)
    with tempfile.TemporaryDirectory() as work:
        path = job(work, url, n)
        env = dict(os.environ, SIM_SESSION_KEY=KEY, SIM_LLM_KEY="unused", CI="true")
        out = os.path.join(work, "strace.txt")
        cmd = ["strace", "-f", "-c", "-o", out, "-e", f"trace={FS_CALLS}", OHRUN, "-q", "run", path, "--jobs", str(n)]
        subprocess.run(cmd, cwd=work, env=env, timeout=600, check=False)
        counts = {}
        for line in open(out):
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in FS_CALLS.split(",") and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])
    sim.terminate()
    sim.wait()
    return {call: c / n for call, c in sorted(counts.items())}


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main():
    ns = [int(n) for n in os.environ.get("SCALE_NS", "100 1000 10000").split()]
    reps = int(os.environ.get("SCALE_REPS", "3"))
    step = os.environ.get("SCALE_STEP", "10s")
    actions = int(os.environ.get("SCALE_ACTIONS", "5"))
    timeout = float(os.environ.get("SCALE_TIMEOUT", "900"))
    strace_n = int(os.environ.get("SCALE_STRACE_N", "100"))
    build()
    print(f"two steps per run, each {actions} action/observation pairs over {step}; one ohrun process, --jobs N; "
          f"{reps} repetition(s), the Ns interleaved; {os.cpu_count()} cores")
    results = {n: [] for n in ns}
    print("| rep | N | wall | peak RSS | CPU per run | fds per run (steady) | most fds | files per run | most sockets at once | errors | simulator CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rep in range(1, reps + 1):
        for n in ns:
            r = measure(n, step, actions, timeout)
            results[n].append(r)
            fpr = f"{r['fds_per_run']:.2f}" if r["fds_per_run"] is not None else "—"
            print(f"| {rep} | {n} | {r['wall']:.1f} s | {r['rss_mib']:.1f} MiB | {r['cpu_ms']:.2f} ms | {fpr} | {r['most_fds']} "
                  f"| {r['files_per_run']:.1f} | {r['peak_sockets']} | {r['errors']} (exit {r['code']}) | {r['sim_cpu']:.2f} s |")
            sys.stdout.flush()
    print()
    print("| N | wall | peak RSS | CPU per run | fds per run (steady) | files per run | errors |")
    print("|---|---|---|---|---|---|---|")
    for n in ns:
        rs = results[n]
        col = lambda k, fmt: spread([r[k] for r in rs], fmt)
        print(f"| {n} | {col('wall', '{:.1f}')} s | {col('rss_mib', '{:.0f}')} MiB | {col('cpu_ms', '{:.2f}')} ms "
              f"| {col('fds_per_run', '{:.2f}')} | {col('files_per_run', '{:.1f}')} | {sum(r['errors'] for r in rs)} |")
    print()
    goals(ns, results)
    if strace_n:
        calls = fs_calls(strace_n, step, actions)
        print(f"\nfile system calls per run (strace -f -c, one batch of {strace_n}): "
              + ", ".join(f"{c} {v:.1f}" for c, v in calls.items()))


def goals(ns, results):
    top = max(ns)
    errors = sum(r["errors"] for rs in results.values() for r in rs)
    rss = max(r["rss_mib"] for r in results[top])
    fds = [r["fds_per_run"] for r in results[top] if r["fds_per_run"] is not None]
    cpu = {n: statistics.median(r["cpu_ms"] for r in results[n]) for n in ns}
    base = cpu[min(ns)]
    worst = max(abs(c / base - 1) for c in cpu.values())
    met = lambda ok: "met" if ok else "MISSED"
    print(f"- 0 errors in every batch: {errors} — {met(errors == 0)}")
    print(f"- peak RSS < 1 GiB at {top} runs: {rss:.0f} MiB at most — {met(rss < 1024)}")
    if fds:
        print(f"- ≤ 2 descriptors per run at steady state at {top} runs: {max(fds):.2f} at most — {met(max(fds) <= 2)}")
    else:
        print(f"- ≤ 2 descriptors per run at steady state at {top} runs: never were all {top} runs under way at once — MISSED")
    print(f"- CPU per run flat within ±20 % from {min(ns)} to {top} (medians against {min(ns)}'s): "
          + ", ".join(f"{n}: {c:.2f} ms" for n, c in cpu.items()) + f"; at most {100 * worst:.0f} % off — {met(worst <= 0.2)}")


if __name__ == "__main__":
    main()
