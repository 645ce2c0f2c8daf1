"""What ohrun's 12-run matrix batch does (bench/matrix_vs_sdk.py), written with the OpenHands Python SDK: one
conversation per run against one running agent-server, a thread pool of JOBS (4) at a time. Each run: a
RemoteWorkspace in its own working directory, a conversation, two messages ("First, for run N.",
"Second."), each `send_message` + `run()`; the conversation's stats; close.

Usage: python sdk_matrix.py SERVER_URL SESSION_KEY ROOT JOBS LLM_URL... (one scripted LLM per run)
Prints one JSON line: per run, cost and tokens from the SDK's conversation stats and its start and end.
"""
import time

T_START = time.time()

import json  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from openhands.sdk import LLM, Conversation  # noqa: E402
from openhands.sdk.workspace import RemoteWorkspace  # noqa: E402
from openhands.tools.preset.default import get_default_agent  # noqa: E402

server, key, root, jobs, urls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
T_IMPORTED = time.time()


def run(n, llm_url):
    start = time.time()
    llm = LLM(model="openai/rehearsal", api_key="rehearsal", base_url=llm_url, usage_id="agent",
              input_cost_per_token=0.000003, output_cost_per_token=0.000015)
    agent = get_default_agent(llm, cli_mode=True)
    with RemoteWorkspace(host=server, api_key=key, working_dir=f"{root}/sdk-{n}") as ws:
        conv = Conversation(agent=agent, workspace=ws)
        for message in [f"First, for run {n}.", "Second."]:
            conv.send_message(message)
            conv.run()
        metrics = conv.conversation_stats.get_combined_metrics()
        usage = metrics.accumulated_token_usage
        conv.close()
    return {"n": n, "start": start, "end": time.time(), "cost": metrics.accumulated_cost,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0}


with ThreadPoolExecutor(max_workers=jobs) as pool:
    runs = list(pool.map(run, range(1, len(urls) + 1), urls))
print(json.dumps({"start": T_START, "imported": T_IMPORTED, "runs": runs}))
