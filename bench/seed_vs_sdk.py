"""Benchmark: the seed job run by `ohrun` and by the Python SDK, side by side, interleaved, against the same
real agent-server and the same scripted LLM (`ohrun rehearse`, restarted for every run). Measures wall
time, each client's own CPU time and peak RSS (VmHWM, sampled from /proc; the agent-server is nobody's),
the time of each phase of both clients (start-up, connect, setup command, conversation, each step,
close), for ohrun the completion latency it records per step, and the agent-server's own CPU per run
(/proc/<server>/stat before and after each run: utime + stime, and cutime + cstime, the commands it ran
and waited for; the agent's terminal runs in tmux, which is nobody's child, the same for both clients).

BENCH_OHRUN_BEFORE=PATH adds a client `ohrun-before`: another ohrun binary (the one before a change),
taking its turn in the same rounds. BENCH_DIFFS_OFF=1 adds a client `ohrun-nodiffs`: the same job with
`report: {diffs: false}` (no snapshots, diffs or final-patch commands: the floor of the server's CPU). BENCH_SEED_QUIET=0 leaves out the SDK with the seed's 2 s quiet window.

Run with the managed venv's Python (it has the SDK):
    ~/.cache/ohrun/agent-server-1.58.2/bin/python bench/seed_vs_sdk.py
"""
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import KEY, start_server, stop_server, ts, watch

ROOT = pathlib.Path(__file__).resolve().parent.parent
# BENCH_OHRUN=PATH: the ohrun binary measured (default: this tree's release build).
OHRUN = os.environ.get("BENCH_OHRUN") or ROOT / "target/release/ohrun"
OHRUN_BEFORE = os.environ.get("BENCH_OHRUN_BEFORE")
SCRIPT = ROOT / "jobs/rehearsals/facts.yaml"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
PHASES = ["start-up", "connect", "setup", "conversation", "step 1", "step 2", "close"]


def server_cpu(pid):
    """(own CPU s, CPU s of the children it waited for) of the agent-server so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def start_rehearsal():
    proc = subprocess.Popen([OHRUN, "rehearse", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()


def ohrun_phases(report, spawned, exited):
    steps = report["steps"]
    started = ts(report["started_at"])
    provision = report["sandbox"]["provision_ms"] / 1000
    setup = sum(s["duration_ms"] for s in report["setup"]) / 1000
    first_step = ts(steps[0]["started_at"])
    return {
        "start-up": started - spawned,
        "connect": provision,
        "setup": setup,
        "conversation": first_step - started - provision - setup,
        "step 1": steps[0]["duration_ms"] / 1000,
        "step 2": steps[1]["duration_ms"] / 1000,
        "close": exited - ts(steps[1]["ended_at"]),
    }


def sdk_phases(out, spawned, exited):
    m, steps = out["marks"], out["steps"]
    return {
        "start-up": m["imported"] - spawned,
        "connect": m["connected"] - m["imported"],
        "setup": m["setup"] - m["connected"],
        "conversation": steps[0]["start"] - m["setup"],
        "step 1": steps[0]["done"] - steps[0]["start"],
        "step 2": steps[1]["done"] - steps[1]["start"],
        "close": exited - steps[1]["done"],
    }


def run_ohrun(url, work, wd, llm_url, binary=OHRUN, extra=""):
    job = pathlib.Path(work, "job.yaml")
    job.write_text(
        f"name: seed\nsandbox: {{kind: remote, url: '{url}', session_key: '${{KEY}}', working_dir: '{wd}'}}\n"
        f"llm: {{model: openai/rehearsal, base_url: '{llm_url}', api_key: '${{KEY}}',\n"
        f"  input_cost_per_token: 0.000003, output_cost_per_token: 0.000015}}\n"
        "setup: [\"echo 'Hello from OpenHands Cloud sandbox!' && pwd\"]\n"
        "steps:\n  - message: Read the current repo and write 3 facts about the project into FACTS.txt.\n"
        "  - message: Great! Now delete that file.\n" + extra)
    spawned = time.time()
    proc = subprocess.Popen([binary, "-q", "run", job], cwd=work, env=dict(os.environ, KEY=KEY))
    rss, cpu = watch(proc)
    exited = time.time()
    assert proc.returncode == 0, "ohrun failed"
    report = json.load(open(pathlib.Path(work, "ohrun-reports/seed/seed/run.json")))
    latency = [s["completion_latency_ms"] for s in report["steps"]]
    return exited - spawned, rss, cpu, report["totals"]["cost"], ohrun_phases(report, spawned, exited), latency


def run_sdk(url, work, wd, llm_url, quiet):
    spawned = time.time()
    proc = subprocess.Popen([sys.executable, ROOT / "bench/sdk_seed.py", url, KEY, wd, llm_url, quiet],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, OPENHANDS_SUPPRESS_BANNER="1", LITELLM_LOCAL_MODEL_COST_MAP="True"))
    rss, cpu = watch(proc)
    exited = time.time()
    assert proc.returncode == 0, "the SDK script failed"
    # The SDK prints its own banner and logs; our line is the last JSON one.
    out = json.loads([l for l in proc.stdout.read().splitlines() if l.startswith('{"cost"')][-1])
    return exited - spawned, rss, cpu, out["cost"], sdk_phases(out, spawned, exited), []


def med(xs):
    return statistics.median(xs)


def report(results):
    print(f"{RUNS} runs each, interleaved, one agent-server and the scripted LLM\n")
    print("| client | wall, median (min … max) | client CPU, median | client peak RSS, median | cost reported "
          "| agent-server CPU per run (own + its commands) | of which its commands |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        walls = [r[0] for r in rows]
        server = [r[6][0] + r[6][1] for r in rows]
        children = [r[6][1] for r in rows]
        print(f"| {name} | {med(walls):.2f} s ({min(walls):.2f} … {max(walls):.2f}) | {med([r[2] for r in rows]):.2f} s | "
              f"{med([r[1] for r in rows]) / 1024:.1f} MiB | ${rows[0][3]:.4f} | "
              f"{med(server):.2f} s ({min(server):.2f} … {max(server):.2f}) | "
              f"{med(children):.2f} s ({min(children):.2f} … {max(children):.2f}) |")
    print("\nPer phase, median seconds (min … max):\n")
    print("| phase | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for phase in PHASES:
        cells = []
        for rows in results.values():
            xs = [r[4][phase] for r in rows]
            cells.append(f"{med(xs):.3f} ({min(xs):.3f} … {max(xs):.3f})")
        print(f"| {phase} | " + " | ".join(cells) + " |")
    if "sdk" in results:
        sdk = med([r[6][0] + r[6][1] for r in results["sdk"]])
        for name in [n for n in results if n.startswith("ohrun")]:
            ours = med([r[6][0] + r[6][1] for r in results[name]])
            print(f"\nagent-server CPU per {name} run / per SDK run: {ours / sdk:.2f} (goal ≤ 0.8)")
    latencies = [lat for r in results["ohrun"] for lat in r[5]]
    print(f"\nohrun completion latency (final state frame read → step done), {len(latencies)} steps: "
          f"median {med(latencies):.3f} ms, max {max(latencies):.3f} ms")


def main():
    server, url = start_server()
    results = {"ohrun": []}
    if OHRUN_BEFORE:
        results["ohrun-before"] = []
    if os.environ.get("BENCH_DIFFS_OFF") == "1":
        results["ohrun-nodiffs"] = []
    results["sdk"] = []
    if os.environ.get("BENCH_SEED_QUIET", "1") != "0":
        results["sdk+quiet2s"] = []
    try:
        for _ in range(RUNS):
            for name in results:
                work = tempfile.mkdtemp()
                wd = os.path.join(work, "ws")
                reh, llm_url = start_rehearsal()
                before = server_cpu(server.pid)
                if name == "ohrun":
                    row = run_ohrun(url, work, wd, llm_url)
                elif name == "ohrun-before":
                    row = run_ohrun(url, work, wd, llm_url, OHRUN_BEFORE)
                elif name == "ohrun-nodiffs":
                    row = run_ohrun(url, work, wd, llm_url, extra="report: {diffs: false}\n")
                else:
                    row = run_sdk(url, work, wd, llm_url, "2" if name.endswith("quiet2s") else "0")
                # The server may still be finishing the run's requests (a deleted conversation's clean-up).
                time.sleep(0.5)
                after = server_cpu(server.pid)
                results[name].append(row + ((after[0] - before[0], after[1] - before[1]),))
                reh.terminate()
                reh.wait()
    finally:
        stop_server(server)
    report(results)


if __name__ == "__main__":
    main()
