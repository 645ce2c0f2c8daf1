"""Benchmark (issue H, item 5 b): provisioning a sandbox themselves — the SDK's `DockerWorkspace` against
`ohrun` `kind: docker` — on the same locally built agent-server image (ohrun/agent-server:1.58.2-python,
`ohrun setup docker`), with the same scripted LLM (`ohrun rehearse jobs/rehearsals/facts.yaml`, restarted
for every run), interleaved, BENCH_RUNS (5) runs each. Each client runs the seed flow: one setup command,
"write 3 facts into FACTS.txt", "delete that file".

Measured per run: wall; client CPU (the process and the processes it waited for, from wait4: for the SDK
the docker CLI runs DockerWorkspace makes; ohrun talks to the engine's API itself) and client peak RSS
(VmHWM); the agent-server's CPU inside its container (every process in it: the server, tmux, bash; from the
container's cgroup); per phase: start-up (process start → ready to act), provision (container started →
/health answers), setup command, conversation (create, subscribe), each step, close (last step's end →
process exit: conversation closed, container stopped and removed, exit); and the LLM's own count of calls,
tokens and cost beside what each client reports.

Both share the host's network (ohrun does so by itself when the LLM is on loopback; the SDK script passes
network="host", host_port=8000), and the SDK's `--ulimit nofile=65536:65536`, above this engine's hard
limit, asks for that limit instead (bench/sdk_docker_seed.py): nothing else of DockerWorkspace is changed.

Run with a Python that has openhands-workspace 1.58.2 (bench/setup_sdk_workspace.sh prints it):
    $(bench/setup_sdk_workspace.sh) bench/docker_vs_sdk.py
Needs target/release/ohrun, a Docker engine and the image; fails if any is missing.
"""
import atexit
import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported: no fetch
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import (ContainerCpu, Rehearse, die, llm_count, require_ohrun, run_watched, summarize, ts)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "jobs/rehearsals/facts.yaml"
IMAGE = os.environ.get("BENCH_IMAGE", "ohrun/agent-server:1.58.2-python")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
KEY = "bench-session-key"
PHASES = ["start-up", "provision", "setup", "conversation", "step 1", "step 2", "close"]
CLIENTS = ["ohrun", "sdk DockerWorkspace"]
JOB = f"bench-docker-{os.getpid()}"  # ohrun labels its containers with the job's name: ours are found by it


def preflight():
    require_ohrun()
    if shutil.which("docker") is None:
        die("no docker CLI on PATH (DockerWorkspace runs it)")
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        die("the Docker engine does not answer (`docker version` failed)")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        die(f"the image {IMAGE} is not on the engine: build it with `ohrun setup docker`")
    try:
        import openhands.workspace  # noqa: F401
    except ImportError:
        die(f"{sys.executable} has no openhands-workspace: run with $(bench/setup_sdk_workspace.sh)")
    others = subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True).stdout.split()
    if others:
        print(f"bench: WARNING: {len(others)} other container(s) running: they are not counted, but they share "
              "the machine", file=sys.stderr)
        print(f"WARNING: {len(others)} other container(s) were running when this benchmark started.\n")


def ours(name, labels, image):
    """ohrun's container carries the job's name as a label; DockerWorkspace's is agent-server-<uuid> of IMAGE."""
    return labels.get("dev.ohrun.job") == JOB or (name.startswith("agent-server-") and image == IMAGE)


def remove_our_containers():
    """At exit, after a failure too: removes the containers this benchmark started and left (the preflight
    made sure none ran before it): ohrun's carry the job's name as a label, DockerWorkspace's are named
    agent-server-* and run the image."""
    ids = set(subprocess.run(["docker", "ps", "-aq", "--filter", f"label=dev.ohrun.job={JOB}"],
                             capture_output=True, text=True).stdout.split())
    ids |= set(subprocess.run(["docker", "ps", "-aq", "--filter", "name=^agent-server-", "--filter", f"ancestor={IMAGE}"],
                              capture_output=True, text=True).stdout.split())
    if ids:
        print(f"bench: removing {len(ids)} container(s) left behind", file=sys.stderr)
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def run_ohrun(work, llm_url):
    job = pathlib.Path(work, "job.yaml")
    job.write_text(
        f"name: {JOB}\nsandbox: {{kind: docker, image: '{IMAGE}'}}\n"
        f"llm: {{model: openai/rehearsal, base_url: '{llm_url}', api_key: '${{KEY}}',\n"
        "  input_cost_per_token: 0.000003, output_cost_per_token: 0.000015}\n"
        "setup: [\"echo 'Hello from a Docker sandbox!' && pwd\"]\n"
        "steps:\n  - message: Read the current repo and write 3 facts about the project into FACTS.txt.\n"
        "  - message: Great! Now delete that file.\n")
    spawned = time.time()
    wall, cpu, rss, proc = run_watched([require_ohrun(), "-q", "run", job], cwd=work, env=dict(os.environ, KEY=KEY))
    exited = spawned + wall
    if proc.returncode != 0:
        die(f"ohrun failed (exit {proc.returncode}); its reports are in {work}")
    r = json.load(open(pathlib.Path(work, f"ohrun-reports/{JOB}/{JOB}/run.json")))
    steps = r["steps"]
    started, provision = ts(r["started_at"]), r["sandbox"]["provision_ms"] / 1000
    setup = sum(s["duration_ms"] for s in r["setup"]) / 1000
    phases = {
        "start-up": started - spawned, "provision": provision, "setup": setup,
        "conversation": ts(steps[0]["started_at"]) - started - provision - setup,
        "step 1": steps[0]["duration_ms"] / 1000, "step 2": steps[1]["duration_ms"] / 1000,
        "close": exited - ts(steps[1]["ended_at"]),
    }
    t = r["totals"]
    return {"wall": wall, "cpu": cpu, "rss": rss, "phases": phases, "cost": float(t["cost"]),
            "tokens": (t["tokens"]["prompt"], t["tokens"]["completion"])}


def run_sdk(work, llm_url):
    spawned = time.time()
    env = dict(os.environ, OPENHANDS_SUPPRESS_BANNER="1", LITELLM_LOCAL_MODEL_COST_MAP="True",
               OH_SESSION_API_KEYS_0=KEY)
    wall, cpu, rss, proc = run_watched([sys.executable, ROOT / "bench/sdk_docker_seed.py", IMAGE, llm_url], cwd=work,
                                       env=env, stdout=open(pathlib.Path(work, "sdk.out"), "w"),
                                       stderr=open(pathlib.Path(work, "sdk.err"), "w"))
    exited = spawned + wall
    lines = open(pathlib.Path(work, "sdk.out")).read().splitlines()
    found = [line for line in lines if line.startswith('{"cost"')]
    if proc.returncode != 0 or not found:
        die(f"the SDK script failed (exit {proc.returncode}); its output is in {work}/sdk.out and sdk.err")
    out = json.loads(found[-1])
    if out["setup_exit"] != 0:
        die(f"the SDK's setup command exited {out['setup_exit']}; see {work}")
    m, steps = out["marks"], out["steps"]
    phases = {
        "start-up": m["imported"] - spawned, "provision": m["provisioned"] - m["imported"],
        "setup": m["setup"] - m["provisioned"], "conversation": steps[0]["start"] - m["setup"],
        "step 1": steps[0]["done"] - steps[0]["start"], "step 2": steps[1]["done"] - steps[1]["start"],
        "close": exited - steps[1]["done"],
        # The close, split: conversation closed, container stopped (docker stop), interpreter exit.
        "close: conversation": m["conversation_closed"] - steps[1]["done"],
        "close: docker stop": m["container_stopped"] - m["conversation_closed"],
        "close: exit": exited - m["container_stopped"],
    }
    return {"wall": wall, "cpu": cpu, "rss": rss, "phases": phases, "cost": out["cost"],
            "tokens": (out["prompt_tokens"], out["completion_tokens"])}


def one(name):
    work = tempfile.mkdtemp(prefix="bench-docker-")
    llm = Rehearse(SCRIPT)
    with ContainerCpu(ours) as containers:
        row = (run_ohrun if name == "ohrun" else run_sdk)(work, llm.url)
    row["llm"] = llm_count(llm.stop(), llm.usage)
    if row["llm"]["beyond"] or row["llm"]["calls"] != 5:
        die(f"{name}: the scripted LLM answered {row['llm']['calls']} agent calls ({row['llm']['beyond']} beyond "
            "its 5 replies): the flow did not run as scripted")
    n, cpu = containers.total()
    if n == 0:
        die(f"{name}: no container cgroup was seen during the run (looked for {containers.pattern}): "
            "the agent-server's CPU cannot be measured")
    if n != 1:
        die(f"{name}: {n} containers seen during one run, expected 1")
    row["server_cpu"] = cpu
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=dev.ohrun.job={JOB}"],
                          capture_output=True, text=True).stdout.split()
    left += subprocess.run(["docker", "ps", "-aq", "--filter", "name=^agent-server-", "--filter", f"ancestor={IMAGE}"],
                           capture_output=True, text=True).stdout.split()
    if left:
        die(f"{name} left {len(left)} container(s) behind")
    shutil.rmtree(work, ignore_errors=True)
    return row


def report(results):
    print(f"{RUNS} runs each, interleaved; image {IMAGE}; the scripted LLM (ohrun rehearse, one per run)\n")
    print("| client | wall | client CPU | client peak RSS | agent-server CPU (container) | cost reported | tokens reported (prompt / completion) | the LLM's count: calls (+ side) / tokens / cost |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        llm = rows[0]["llm"]
        same = all(r["llm"] == llm for r in rows) and all(r["tokens"] == rows[0]["tokens"] for r in rows)
        print(f"| {name} | {summarize((r['wall'] for r in rows), ' s')} | {summarize((r['cpu'] for r in rows), ' s')} | "
              f"{summarize((r['rss'] / 1024 for r in rows), ' MiB', 1)} | {summarize((r['server_cpu'] for r in rows), ' s')} | "
              f"${rows[0]['cost']:.4f} | {rows[0]['tokens'][0]:,} / {rows[0]['tokens'][1]:,} | "
              f"{llm['calls']} (+ {llm['side']}) / {llm['prompt']:,} + {llm['completion']:,} / ${llm['cost']:.4f}"
              f"{'' if same else ' (varied between runs)'} |")
    print("\nPer phase, median seconds (min … max):\n")
    print("| phase | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    phases = PHASES + [p for p in results[CLIENTS[1]][0]["phases"] if p not in PHASES]
    for phase in phases:
        cells = [summarize((r["phases"][phase] for r in rows), "", 3) if phase in rows[0]["phases"] else "—"
                 for rows in results.values()]
        print(f"| {phase} | " + " | ".join(cells) + " |")


def main():
    preflight()
    atexit.register(remove_our_containers)
    results = {name: [] for name in CLIENTS}
    for i in range(RUNS):
        for name in CLIENTS:
            results[name].append(one(name))
            print(f"  {name} run {i + 1}: {results[name][-1]['wall']:.1f} s", file=sys.stderr)
    report(results)


if __name__ == "__main__":
    main()
