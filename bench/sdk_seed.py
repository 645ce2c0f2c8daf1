"""The seed flow written with the OpenHands Python SDK, for comparison with `ohrun` (bench/seed_vs_sdk.py).

Usage: python sdk_seed.py SERVER_URL SESSION_KEY WORKING_DIR LLM_BASE_URL QUIET_SECONDS
Prints one JSON line: cost, wall time of each step (send -> run() returned -> quiet window over).
"""
import json
import sys
import time

from openhands.sdk import LLM, Conversation
from openhands.sdk.workspace import RemoteWorkspace
from openhands.tools.preset.default import get_default_agent

server, key, wd, llm_url, quiet = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
llm = LLM(model="openai/rehearsal", api_key="rehearsal", base_url=llm_url, usage_id="agent",
          input_cost_per_token=0.000003, output_cost_per_token=0.000015)
agent = get_default_agent(llm, cli_mode=True)
last_event = [time.monotonic()]


def on_event(_event):
    last_event[0] = time.monotonic()


steps = []
with RemoteWorkspace(host=server, api_key=key, working_dir=wd) as ws:
    result = ws.execute_command("echo 'Hello from OpenHands Cloud sandbox!' && pwd")
    conv = Conversation(agent=agent, workspace=ws, callbacks=[on_event])
    for message in ["Read the current repo and write 3 facts about the project into FACTS.txt.",
                    "Great! Now delete that file."]:
        t0 = time.monotonic()
        conv.send_message(message)
        conv.run()
        t1 = time.monotonic()
        # The seed example's workaround: wait until no event arrived for `quiet` seconds.
        while quiet > 0 and time.monotonic() - last_event[0] < quiet:
            time.sleep(0.05)
        steps.append({"run_returned_s": t1 - t0, "done_s": time.monotonic() - t0})
    cost = conv.conversation_stats.get_combined_metrics().accumulated_cost
    conv.close()
print(json.dumps({"cost": cost, "steps": steps, "setup_exit": result.exit_code}))
