"""The seed flow written with the OpenHands Python SDK, for comparison with `ohrun` (bench/seed_vs_sdk.py).

Usage: python sdk_seed.py SERVER_URL SESSION_KEY WORKING_DIR LLM_BASE_URL QUIET_SECONDS
Prints one JSON line: cost, and the wall-clock moment (time.time()) each phase ended, so the harness can
split the process's life the same way it splits ohrun's: start-up (interpreter and imports), connect,
setup command, each step (send -> run() returned -> quiet window over), close.
"""
import time

T_START = time.time()

import json  # noqa: E402
import sys  # noqa: E402

from openhands.sdk import LLM, Conversation  # noqa: E402
from openhands.sdk.workspace import RemoteWorkspace  # noqa: E402
from openhands.tools.preset.default import get_default_agent  # noqa: E402

server, key, wd, llm_url, quiet = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
llm = LLM(model="openai/rehearsal", api_key="rehearsal", base_url=llm_url, usage_id="agent",
          input_cost_per_token=0.000003, output_cost_per_token=0.000015)
agent = get_default_agent(llm, cli_mode=True)
marks = {"imported": time.time()}
last_event = [time.monotonic()]


def on_event(_event):
    last_event[0] = time.monotonic()


steps = []
with RemoteWorkspace(host=server, api_key=key, working_dir=wd) as ws:
    marks["connected"] = time.time()
    result = ws.execute_command("echo 'Hello from OpenHands Cloud sandbox!' && pwd")
    marks["setup"] = time.time()
    conv = Conversation(agent=agent, workspace=ws, callbacks=[on_event])
    marks["conversation"] = time.time()
    for message in ["Read the current repo and write 3 facts about the project into FACTS.txt.",
                    "Great! Now delete that file."]:
        t0 = time.time()
        conv.send_message(message)
        conv.run()
        t1 = time.time()
        # The seed example's workaround: wait until no event arrived for `quiet` seconds.
        while quiet > 0 and time.monotonic() - last_event[0] < quiet:
            time.sleep(0.05)
        steps.append({"start": t0, "run_returned": t1, "done": time.time()})
    cost = conv.conversation_stats.get_combined_metrics().accumulated_cost
    conv.close()
print(json.dumps({"cost": cost, "steps": steps, "marks": marks, "start": T_START, "setup_exit": result.exit_code}))
