"""The seed flow with the OpenHands Python SDK provisioning its own sandbox: a `DockerWorkspace`
(openhands-workspace) on the locally built agent-server image, for comparison with `ohrun` `kind: docker`
(bench/docker_vs_sdk.py). Needs a Python with openhands-workspace 1.58.2 (bench/setup_sdk_workspace.sh).

Usage: python sdk_docker_seed.py IMAGE LLM_BASE_URL
The session key is OH_SESSION_API_KEYS_0 from the environment (DockerWorkspace forwards it into the
container). The scripted LLM listens on the host's loopback; to reach it from inside the container the
workspace shares the host's network (`network="host"`, as ohrun does for an LLM on loopback), so the
server listens on the port the image's command names, 8000, and the workspace is told that port.

Prints one JSON line: cost and tokens from the SDK's conversation stats, and the wall-clock moment
(time.time()) each phase ended: imported, provisioned (container started and healthy), setup command,
conversation created, each step, conversation closed, container stopped.
"""
import time

T_START = time.time()

import json  # noqa: E402
import sys  # noqa: E402

from openhands.sdk import LLM, Conversation  # noqa: E402
from openhands.tools.preset.default import get_default_agent  # noqa: E402
from openhands.workspace import DockerWorkspace  # noqa: E402
import openhands.workspace.docker.workspace as docker_workspace  # noqa: E402

# DockerWorkspace runs `docker run --ulimit nofile=65536:65536`, above the hard limit this machine's Docker
# engine has (20,000 here: runc then refuses to start the container). The one change made to the SDK's
# behaviour: that flag asks for the engine's own hard limit instead (ohrun sets no ulimit at all).
import resource  # noqa: E402

_NOFILE = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
_execute_command = docker_workspace.execute_command


def _execute_command_fitted(cmd, *args, **kwargs):
    if isinstance(cmd, list) and "--ulimit" in cmd:
        i = cmd.index("--ulimit")
        if cmd[i + 1] == "nofile=65536:65536":
            cmd = cmd[:i + 1] + [f"nofile={_NOFILE}:{_NOFILE}"] + cmd[i + 2:]
    return _execute_command(cmd, *args, **kwargs)


docker_workspace.execute_command = _execute_command_fitted


def _port_free(port):
    """The SDK's own check binds without SO_REUSEADDR, so a TIME_WAIT connection left by the previous run
    makes it refuse a port the server (which binds with SO_REUSEADDR) could take: check as the server binds."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


docker_workspace.check_port_available = _port_free

image, llm_url = sys.argv[1], sys.argv[2]
llm = LLM(model="openai/rehearsal", api_key="rehearsal", base_url=llm_url, usage_id="agent",
          input_cost_per_token=0.000003, output_cost_per_token=0.000015)
agent = get_default_agent(llm, cli_mode=True)
marks = {"imported": time.time()}

steps = []
with DockerWorkspace(server_image=image, network="host", host_port=8000, working_dir="/workspace",
                     platform="linux/amd64") as ws:
    marks["provisioned"] = time.time()
    result = ws.execute_command("echo 'Hello from a Docker sandbox!' && pwd")
    marks["setup"] = time.time()
    conv = Conversation(agent=agent, workspace=ws)
    marks["conversation"] = time.time()
    for message in ["Read the current repo and write 3 facts about the project into FACTS.txt.",
                    "Great! Now delete that file."]:
        t0 = time.time()
        conv.send_message(message)
        conv.run()
        steps.append({"start": t0, "done": time.time()})
    metrics = conv.conversation_stats.get_combined_metrics()
    usage = metrics.accumulated_token_usage
    conv.close()
    marks["conversation_closed"] = time.time()
marks["container_stopped"] = time.time()
print(json.dumps({"cost": metrics.accumulated_cost,
                  "prompt_tokens": usage.prompt_tokens if usage else 0,
                  "completion_tokens": usage.completion_tokens if usage else 0,
                  "steps": steps, "marks": marks, "start": T_START, "setup_exit": result.exit_code}))
