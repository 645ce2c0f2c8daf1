"""What the Python benchmarks share: a real agent-server from the managed venv, the peak RSS and CPU time
of a client process, and RFC 3339 time stamps."""
import atexit
import datetime
import glob
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

KEY = "bench-session-key"

# Two steps, each a terminal command that leaves a mark in the run's working directory, then `finish`.
TWO_STEP_SCRIPT = """replies:
  - tool: terminal
    args: {command: 'echo first >> served.log'}
  - tool: finish
    args: {message: first done}
  - tool: terminal
    args: {command: 'echo second >> served.log'}
  - tool: finish
    args: {message: second done}
"""


def write_matrix_job(work, url, runs, name, diffs=True):
    """A job NAME of RUNS runs (matrix n: 1..RUNS) on the server at URL, each in work/ws/RUN_ID, with the
    two-step script (DIFFS: False adds `report: {diffs: false}`); returns its path."""
    (work / "script.yaml").write_text(TWO_STEP_SCRIPT)
    values = ", ".join(str(n) for n in range(1, runs + 1))
    job = work / f"{name}.yaml"
    job.write_text(
        f"name: {name}\nmatrix:\n  n: [{values}]\n"
        f"sandbox: {{kind: remote, url: '{url}', session_key: '${{KEY}}', working_dir: '{work}/ws/{{{{ run.id }}}}'}}\n"
        "llm: {model: m}\nsteps:\n  - message: First, for run {{ n }}.\n  - message: Second.\nrehearsal: script.yaml\n"
        + ("" if diffs else "report: {diffs: false}\n"))
    return job


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server():
    """An agent-server of this Python's venv on a free port; (process, base URL) once it answers."""
    state = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, OH_SESSION_API_KEYS_0=KEY, OH_ENABLE_VSCODE="false", OH_ENABLE_BROWSER="false",
               LITELLM_LOCAL_MODEL_COST_MAP="True", OPENHANDS_SUPPRESS_BANNER="1", TMUX_TMPDIR=state)
    server = subprocess.Popen([sys.executable, "-m", "openhands.agent_server", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=state, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    time.sleep(1)
    server.state = state
    return server, f"http://127.0.0.1:{port}"


def stop_server(server):
    """Stops a server of start_server, and the tmux servers it started (they daemonize out of reach)."""
    server.terminate()
    server.wait()
    for sock in glob.glob(os.path.join(server.state, "*", "*")):
        subprocess.run(["tmux", "-S", sock, "kill-server"], stderr=subprocess.DEVNULL)


def watch(proc):
    """Peak RSS (VmHWM, KiB) and CPU time (s) of proc — not its children — sampled until it exits."""
    peak, cpu = 0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    while proc.poll() is None:
        try:
            for line in open(f"/proc/{proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
        time.sleep(0.01)
    return peak, cpu


def cpu_of(pid):
    """CPU time (s) a live process has used so far (user + system; its children not counted)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """CPU seconds the whole machine has been busy (every core, all but idle and iowait)."""
    fields = [int(f) for f in open("/proc/stat").readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def ts(rfc3339):
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# ---- Shared by docker_vs_sdk.py and matrix_vs_sdk.py (issue H item 5 b, c) ----

OHRUN_BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target/release/ohrun")
INPUT_COST, OUTPUT_COST = 0.000003, 0.000015


def die(message):
    """Stops the benchmark loudly: a part it needs is missing or a run failed."""
    print(f"bench: error: {message}", file=sys.stderr)
    sys.exit(1)


def require_ohrun():
    if not os.access(OHRUN_BIN, os.X_OK):
        die(f"{OHRUN_BIN} is missing: build it first (cargo build --release --locked)")
    return OHRUN_BIN


def run_watched(argv, **popen):
    """Runs argv to its end. Returns (wall s, CPU s, peak RSS KiB, process): CPU is user + system of the
    process and every descendant it waited for (wait4: exact, not clock ticks; for the SDK that includes
    the docker CLI processes DockerWorkspace runs), peak RSS is the process's own VmHWM, sampled from /proc
    every 10 ms until it exits (not reaped before the last sample). proc.cpu_own: the process's own CPU
    (clock ticks), without its children."""
    start = time.time()
    proc = subprocess.Popen(argv, **popen)
    peak = 0
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        try:
            for line in open(f"/proc/{proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.01)
    try:
        for line in open(f"/proc/{proc.pid}/status"):  # a zombie keeps no memory map: usually gone
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    except OSError:
        pass
    proc.cpu_own = cpu_of(proc.pid)  # not reaped yet: the zombie's own times, its children not counted
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if peak == 0:
        peak = usage.ru_maxrss
    return wall, usage.ru_utime + usage.ru_stime, peak, proc


_LIVE = []  # processes to end if the benchmark stops early (die(), an exception)


@atexit.register
def _end_live():
    for proc in _LIVE:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Rehearse:
    """`ohrun rehearse SCRIPT` (the scripted LLM) as a process of its own; stop() ends it with SIGINT and
    returns the LLM's own count: (agent calls, calls beyond the script, side calls), from its last line."""

    def __init__(self, script):
        self.script = str(script)
        self.proc = subprocess.Popen([require_ohrun(), "rehearse", self.script], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        _LIVE.append(self.proc)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.proc.kill()
            die(f"`ohrun rehearse {script}` did not print its URL: {self.proc.stderr.read()!r}")
        usage = open(self.script).read()
        import re
        m = re.search(r"^usage:\s*\{?\s*\n?\s*prompt_tokens:\s*(\d+)\s*,?\s*\n?\s*completion_tokens:\s*(\d+)", usage, re.M)
        self.usage = (int(m.group(1)), int(m.group(2))) if m else (1000, 100)  # the script's, or ohrun's default

    def stop(self):
        import signal
        import re
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=10)
        _LIVE.remove(self.proc)
        m = re.search(r"answered (\d+) agent calls \((\d+) beyond the script\) and (\d+) side calls", err)
        if not m:
            die(f"the scripted LLM did not report its calls: {err!r}")
        return int(m.group(1)), int(m.group(2)), int(m.group(3))


def llm_count(calls, usage):
    """Tokens and cost as the scripted LLM counted them: every call it answered (agent and side calls alike)
    reported `usage`; priced at the benchmark's $3 / $15 per million tokens."""
    n = calls[0] + calls[2]
    prompt, completion = n * usage[0], n * usage[1]
    return {"calls": calls[0], "side": calls[2], "beyond": calls[1], "prompt": prompt, "completion": completion,
            "cost": prompt * INPUT_COST + completion * OUTPUT_COST}


class ContainerCpu:
    """The CPU time of every Docker container seen while it runs: a thread reads each container's cgroup
    (v1: cpuacct/docker/ID/cpuacct.usage; v2: system.slice/docker-ID.scope/cpu.stat) every 50 ms and keeps
    the last value, so what a container spent in its last < 50 ms before it was removed is not counted."""

    def __init__(self, ours):
        """ours(name, labels, image): whether a container is the benchmark's (others on the engine are not
        counted); asked once per container, with `docker inspect`."""
        import threading
        v1 = "/sys/fs/cgroup/cpuacct/docker"
        if os.path.isdir(v1):
            self.pattern, self.read = os.path.join(v1, "*", "cpuacct.usage"), lambda t: int(t) / 1e9
        elif os.path.isdir("/sys/fs/cgroup/system.slice"):
            self.pattern = "/sys/fs/cgroup/system.slice/docker-*.scope/cpu.stat"
            self.read = lambda t: int(t.split("usage_usec")[1].split()[0]) / 1e6
        else:
            self.pattern = None
        self.ours, self.decided = ours, {}
        self.seen, self.stop_flag = {}, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self.stop_flag.is_set():
            for path in glob.glob(self.pattern or "/nonexistent"):
                if path not in self.decided:
                    cid = os.path.basename(os.path.dirname(path)).removeprefix("docker-").removesuffix(".scope")
                    out = subprocess.run(["docker", "inspect", "-f", "{{json .Name}} {{json .Config.Labels}} {{json .Config.Image}}", cid],
                                         capture_output=True, text=True).stdout.split(" ", 2)
                    import json
                    self.decided[path] = len(out) == 3 and self.ours(json.loads(out[0]).lstrip("/"), json.loads(out[1]) or {},
                                                                     json.loads(out[2]))
                if not self.decided[path]:
                    continue
                try:
                    self.seen[path] = self.read(open(path).read())
                except (OSError, ValueError, IndexError):
                    pass
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop_flag.set()
        self.thread.join()

    def total(self):
        """(containers seen, their CPU seconds)."""
        return len(self.seen), sum(self.seen.values())


def summarize(xs, unit="", digits=2):
    """'median (min … max)'."""
    xs = list(xs)
    f = f"{{:.{digits}f}}"
    return f"{f.format(statistics.median(xs))}{unit} ({f.format(min(xs))} … {f.format(max(xs))})"
