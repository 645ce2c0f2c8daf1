"""Benchmark: the seed job run by `ohrun` and by the Python SDK, side by side, against the same real
agent-server and the same scripted LLM (`ohrun rehearse`). Measures wall time, each process's own peak
RSS (VmHWM, sampled from /proc) and, for ohrun, the completion latency it records per step.

Run with the managed venv's Python (it has the SDK):  ~/.cache/ohrun/agent-server-1.58.2/bin/python bench/seed_vs_sdk.py
"""
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
OHRUN = ROOT / "target/release/ohrun"
SCRIPT = ROOT / "jobs/rehearsals/facts.yaml"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
KEY = "bench-session-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_kib(proc):
    """Polls VmHWM of proc (not its children) until it exits."""
    peak = 0
    while proc.poll() is None:
        try:
            for line in open(f"/proc/{proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    return peak


def start_rehearsal():
    proc = subprocess.Popen([OHRUN, "rehearse", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()


def main():
    state = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, OH_SESSION_API_KEYS_0=KEY, OH_ENABLE_VSCODE="false", OH_ENABLE_BROWSER="false",
               LITELLM_LOCAL_MODEL_COST_MAP="True", OPENHANDS_SUPPRESS_BANNER="1")
    server = subprocess.Popen([sys.executable, "-m", "openhands.agent_server", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=state, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    time.sleep(1)
    results = {"ohrun": [], "sdk": [], "sdk+quiet2s": []}
    latencies = []
    try:
        for i in range(RUNS):
            for name in results:
                work = tempfile.mkdtemp()
                wd = os.path.join(work, "ws")
                reh, llm_url = start_rehearsal()
                t0 = time.monotonic()
                if name == "ohrun":
                    job = pathlib.Path(work, "job.yaml")
                    job.write_text(
                        f"name: seed\nsandbox: {{kind: remote, url: '{url}', session_key: '${{KEY}}', working_dir: '{wd}'}}\n"
                        f"llm: {{model: openai/rehearsal, base_url: '{llm_url}', api_key: '${{KEY}}',\n"
                        f"  input_cost_per_token: 0.000003, output_cost_per_token: 0.000015}}\n"
                        "setup: [\"echo 'Hello from OpenHands Cloud sandbox!' && pwd\"]\n"
                        "steps:\n  - message: Read the current repo and write 3 facts about the project into FACTS.txt.\n"
                        "  - message: Great! Now delete that file.\n")
                    proc = subprocess.Popen([OHRUN, "-q", "run", job], cwd=work, env=dict(os.environ, KEY=KEY))
                else:
                    quiet = "2" if name.endswith("quiet2s") else "0"
                    proc = subprocess.Popen([sys.executable, ROOT / "bench/sdk_seed.py", url, KEY, wd, llm_url, quiet],
                                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                            env=dict(os.environ, OPENHANDS_SUPPRESS_BANNER="1", LITELLM_LOCAL_MODEL_COST_MAP="True"))
                rss = peak_rss_kib(proc)
                wall = time.monotonic() - t0
                reh.terminate()
                reh.wait()
                assert proc.returncode == 0, f"{name} failed"
                if name == "ohrun":
                    report = json.load(open(pathlib.Path(work, "ohrun-reports/seed/run.json")))
                    cost = report["totals"]["cost"]
                    latencies += [s["completion_latency_ms"] for s in report["steps"]]
                else:
                    # The SDK prints its own banner and logs; our line is the last JSON one.
                    line = [l for l in proc.stdout.read().splitlines() if l.startswith('{"cost"')][-1]
                    cost = json.loads(line)["cost"]
                results[name].append((wall, rss, cost))
    finally:
        server.terminate()
        server.wait()
    print(f"{RUNS} runs each, same agent-server and scripted LLM\n")
    print("| client | wall time, median (min … max) | peak RSS of the client, median | cost reported |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        walls = [r[0] for r in rows]
        rss = [r[1] for r in rows]
        print(f"| {name} | {statistics.median(walls):.2f} s ({min(walls):.2f} … {max(walls):.2f}) | "
              f"{statistics.median(rss) / 1024:.1f} MiB | ${rows[0][2]:.4f} |")
    print(f"\nohrun completion latency (final state frame → step done), {len(latencies)} steps: "
          f"median {statistics.median(latencies):.3f} ms, max {max(latencies):.3f} ms")


if __name__ == "__main__":
    main()
