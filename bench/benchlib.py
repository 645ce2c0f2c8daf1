"""What the Python benchmarks share: a real agent-server from the managed venv, the peak RSS and CPU time
of a client process, and RFC 3339 time stamps."""
import datetime
import glob
import os
import socket
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


def write_matrix_job(work, url, runs, name):
    """A job NAME of RUNS runs (matrix n: 1..RUNS) on the server at URL, each in work/ws/RUN_ID, with the
    two-step script; returns its path."""
    (work / "script.yaml").write_text(TWO_STEP_SCRIPT)
    values = ", ".join(str(n) for n in range(1, runs + 1))
    job = work / f"{name}.yaml"
    job.write_text(
        f"name: {name}\nmatrix:\n  n: [{values}]\n"
        f"sandbox: {{kind: remote, url: '{url}', session_key: '${{KEY}}', working_dir: '{work}/ws/{{{{ run.id }}}}'}}\n"
        "llm: {model: m}\nsteps:\n  - message: First, for run {{ n }}.\n  - message: Second.\nrehearsal: script.yaml\n")
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
