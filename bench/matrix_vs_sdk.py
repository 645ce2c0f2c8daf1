"""Benchmark (issue H, item 5 c): a 12-run matrix — `ohrun run --jobs 4` of a 12-run matrix job against a
Python script on the OpenHands SDK with a thread pool of 4 (bench/sdk_matrix.py: 12 conversations, each
doing what a run of the job does) — against one running real agent-server 1.58.2 and the scripted LLM,
interleaved, BENCH_RUNS (5) times each. Each run: two messages, each answered by a terminal command
(`echo … >> served.log` in the run's working directory) and `finish` (benchlib.TWO_STEP_SCRIPT).

Clients:
  - `ohrun --rehearse`: `ohrun -q run --rehearse --jobs 4 JOB`, the scripted LLM inside ohrun (one endpoint
    per run attempt); it keeps no count of its own that outlives the process, so only ohrun's totals;
  - `ohrun`: the same job with `llm.base_url` per run at one of 12 `ohrun rehearse` processes (the same
    endpoint code, outside): ohrun's cost beside the LLM's own count;
  - `sdk pool 4`: bench/sdk_matrix.py, each conversation at one of 12 `ohrun rehearse` processes.

Per batch: wall; client CPU (wait4: the process and what it waited for) and peak RSS (VmHWM); the
agent-server's CPU during the batch (its Python process; the tmux/bash processes it starts for commands
run outside its process tree) and the whole machine's busy CPU; cost and tokens as the client reports them
(ohrun: summary.json totals; the SDK: Σ conversation_stats) and as the scripted LLMs counted them (calls
answered × the usage each reported). Every run's served.log is checked (both commands ran, once each).

Run with the managed venv's Python (it has the SDK and starts the agent-server):
    ~/.cache/ohrun/agent-server-1.58.2/bin/python bench/matrix_vs_sdk.py
"""
import json
import os
import pathlib
import shutil
import sys
import tempfile

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported: no fetch
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

from benchlib import (KEY, TWO_STEP_SCRIPT, Rehearse, cpu_of, die, llm_count, machine_busy, require_ohrun,
                      run_watched, start_server, stop_server, summarize)

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SIZE = int(os.environ.get("BENCH_MATRIX_RUNS", "12"))
JOBS = int(os.environ.get("BENCH_JOBS", "4"))
CLIENTS = ["ohrun --rehearse", "ohrun", f"sdk pool {JOBS}"]
USAGE = "usage: {prompt_tokens: 1200, completion_tokens: 80}\n"


def write_job(work, url, llm_ports):
    (work / "script.yaml").write_text(USAGE + TWO_STEP_SCRIPT)
    if llm_ports is None:
        axis = ", ".join(str(n) for n in range(1, SIZE + 1))
        head, llm = f"matrix:\n  n: [{axis}]\n", "llm: {model: m}\nrehearsal: script.yaml\n"
        first = "First, for run {{ n }}."
    else:
        # One scripted LLM per run: the run's port is its matrix value; `n` is its place in the list.
        axis = ", ".join(str(p) for p in llm_ports)
        head = f"matrix:\n  port: [{axis}]\n"
        llm = ("llm: {model: openai/rehearsal, base_url: 'http://127.0.0.1:{{ port }}/v1', api_key: '${KEY}',\n"
               "  input_cost_per_token: 0.000003, output_cost_per_token: 0.000015}\n")
        first = "First, for run {{ run.index }}."
    job = work / "matrix.yaml"
    job.write_text(
        f"name: matrix\n{head}"
        f"sandbox: {{kind: remote, url: '{url}', session_key: '${{KEY}}', working_dir: '{work}/ws/{{{{ run.id }}}}'}}\n"
        f"{llm}steps:\n  - message: {first}\n  - message: Second.\n")
    return job


def check_served(dirs):
    for d in dirs:
        try:
            lines = open(os.path.join(d, "served.log")).read().split()
        except OSError:
            lines = []
        if lines != ["first", "second"]:
            die(f"{d}/served.log holds {lines}, not the two scripted commands once each")


def batch(name, server, url):
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    llms = [] if name == "ohrun --rehearse" else [scripted_llm(work) for _ in range(SIZE)]
    env = dict(os.environ, KEY=KEY, OPENHANDS_SUPPRESS_BANNER="1", LITELLM_LOCAL_MODEL_COST_MAP="True")
    server_cpu, busy = cpu_of(server.pid), machine_busy()
    if name.startswith("ohrun"):
        job = write_job(work, url, None if not llms else [int(r.url.rsplit(":", 1)[1].split("/")[0]) for r in llms])
        argv = [require_ohrun(), "-q", "run", *(["--rehearse"] if not llms else []), "--jobs", str(JOBS), job]
        wall, cpu, rss, proc = run_watched(argv, cwd=work, env=env)
    else:
        argv = [sys.executable, ROOT / "bench/sdk_matrix.py", url, KEY, work / "ws", str(JOBS), *(r.url for r in llms)]
        wall, cpu, rss, proc = run_watched(argv, cwd=work, env=env, stdout=open(work / "sdk.out", "w"),
                                           stderr=open(work / "sdk.err", "w"))
    server_cpu, busy = cpu_of(server.pid) - server_cpu, machine_busy() - busy
    if proc.returncode != 0:
        die(f"{name} failed (exit {proc.returncode}); see {work}")
    if name.startswith("ohrun"):
        summary = json.load(open(work / "ohrun-reports/matrix/summary.json"))
        if summary["totals"]["by_status"] != {"succeeded": SIZE}:
            die(f"{name}: {summary['totals']['by_status']}; see {work}")
        t = summary["totals"]
        cost, tokens = float(t["cost"]), (t["tokens"]["prompt"], t["tokens"]["completion"])
        served = [work / "ws" / r["id"] for r in summary["runs"]]
    else:
        found = [l for l in open(work / "sdk.out").read().splitlines() if l.startswith('{"start"')]
        if not found:
            die(f"{name} printed no result; see {work}/sdk.out and sdk.err")
        runs = json.loads(found[-1])["runs"]
        cost = sum(r["cost"] for r in runs)
        tokens = (sum(r["prompt_tokens"] for r in runs), sum(r["completion_tokens"] for r in runs))
        served = [work / "ws" / f"sdk-{r['n']}" for r in runs]
    check_served(served)
    counted = None
    if llms:
        counts = [r.stop() for r in llms]
        counted = llm_count(tuple(sum(c[i] for c in counts) for i in range(3)), llms[0].usage)
        if counted["beyond"] or counted["calls"] != 4 * SIZE:
            die(f"{name}: the scripted LLMs answered {counted['calls']} agent calls ({counted['beyond']} beyond their "
                f"scripts), not {4 * SIZE}: the runs did not go as scripted")
    shutil.rmtree(work, ignore_errors=True)
    return {"wall": wall, "cpu": cpu, "rss": rss, "server_cpu": server_cpu, "busy": busy, "cost": cost,
            "tokens": tokens, "llm": counted}


def scripted_llm(work):
    script = work / "script.yaml"
    if not script.exists():
        script.write_text(USAGE + TWO_STEP_SCRIPT)
    return Rehearse(script)


def report(results):
    print(f"{SIZE}-run matrix, {JOBS} at a time, {RUNS} batches each, interleaved; one agent-server, the scripted LLM\n")
    print("| client | batch wall | client CPU | client peak RSS | agent-server CPU (its process) | machine busy (both cores, CPU s) |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        print(f"| {name} | {summarize((r['wall'] for r in rows), ' s')} | {summarize((r['cpu'] for r in rows), ' s')} | "
              f"{summarize((r['rss'] / 1024 for r in rows), ' MiB', 1)} | {summarize((r['server_cpu'] for r in rows), ' s')} | "
              f"{summarize((r['busy'] for r in rows), ' s', 1)} |")
    print(f"\nCost and tokens of a batch ({SIZE} runs), as the client reports them and as the scripted LLMs counted them:\n")
    print("| client | cost reported | tokens reported (prompt / completion) | the LLMs' count: agent calls (+ side calls) | tokens | cost |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        varied = len({(r["cost"], r["tokens"], json.dumps(r["llm"], sort_keys=True)) for r in rows}) > 1
        r = rows[0]
        llm = r["llm"]
        count = ("not kept (in-process endpoint)", "—", "—") if llm is None else (
            f"{llm['calls']} (+ {llm['side']})", f"{llm['prompt']:,} / {llm['completion']:,}", f"${llm['cost']:.4f}")
        print(f"| {name} | ${r['cost']:.4f}{' (varied)' if varied else ''} | {r['tokens'][0]:,} / {r['tokens'][1]:,} | "
              + " | ".join(count) + " |")


def main():
    require_ohrun()
    try:
        import openhands.sdk  # noqa: F401
    except ImportError:
        die(f"{sys.executable} has no OpenHands SDK: run with ~/.cache/ohrun/agent-server-1.58.2/bin/python")
    server, url = start_server()
    results = {name: [] for name in CLIENTS}
    try:
        for i in range(RUNS):
            for name in CLIENTS:
                results[name].append(batch(name, server, url))
                print(f"  {name} batch {i + 1}: {results[name][-1]['wall']:.1f} s", file=sys.stderr)
    finally:
        stop_server(server)
    report(results)


if __name__ == "__main__":
    main()
