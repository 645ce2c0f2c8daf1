#!/usr/bin/env python3
"""How fast report.html opens for a large batch (issue I): a synthetic batch directory of RUNS runs (default
1,000), each with a run.json, an events.jsonl of EVENTS events (default 200: a system prompt, then
messages, actions, observations and state updates of two steps) and a diff per step; `ohrun view` writes
the pages; headless Chromium opens the batch page and one run page.

Two numbers per page, each the median of --repeat loads:
  ready   performance.now() when the page's script has drawn it and laid it out (report.html writes it
          into <body data-ready-ms>): navigation start to a usable page, browser start-up excluded;
  wall    the wall time of `chromium --headless --dump-dom` for the page, minus the same for a trivial
          page (the browser's own start and exit).

    cargo build --release && python3 bench/html_scale.py [--runs 1000] [--events 200] [--repeat 5]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def events_for(run_id, n_events):
    """N_EVENTS events shaped like the agent-server's: a system prompt, then for each of two steps the
    user's message and turns of state update, terminal action and observation, then finish."""
    t = 1_764_561_600.0
    out = []

    def ev(kind, source, **fields):
        nonlocal t
        t += 0.25
        e = {"id": f"{run_id}-{len(out)}", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000000",
             "source": source}
        e.update(fields)
        e["kind"] = kind
        out.append(e)

    ev("SystemPromptEvent", "agent", system_prompt={"type": "text", "text": "You are OpenHands agent.\n" + "Guideline. " * 2500},
       tools=[{"name": "terminal"}, {"name": "file_editor"}, {"name": "finish"}])
    per_step = (n_events - 1) // 2
    for step in (1, 2):
        ev("MessageEvent", "user", llm_message={"role": "user", "content": [{"type": "text", "text": f"Step {step} of {run_id}."}]})
        i = 0
        while len(out) < 1 + per_step * step - 2:
            i += 1
            cmd = f"grep -rn 'def tokenize' src/ | head -n {i}"
            ev("ConversationStateUpdateEvent", "environment", key="stats", value={"usage_to_metrics": {"agent": {"accumulated_cost": 0.001 * i}}})
            ev("ActionEvent", "agent", thought=[{"type": "text", "text": "Looking for the tokenizer."}],
               action={"command": cmd, "kind": "TerminalAction"}, tool_name="terminal", tool_call_id=f"call_{i}",
               tool_call={"id": f"call_{i}", "name": "terminal", "arguments": json.dumps({"command": cmd})}, summary=f"terminal: {cmd}")
            ev("ObservationEvent", "environment", tool_name="terminal", tool_call_id=f"call_{i}",
               observation={"content": [{"type": "text", "text": "\n".join(f"src/tok{j}.py:{j}: def tokenize(text):" for j in range(30))}],
                            "exit_code": 0, "kind": "TerminalObservation"})
        ev("ActionEvent", "agent", action={"message": f"Step {step} done.", "kind": "FinishAction"}, tool_name="finish")
        ev("ObservationEvent", "environment", tool_name="finish", observation={"content": [{"type": "text", "text": f"Step {step} done."}]})
    return out[:n_events]


DIFF = """diff --git a/CHANGELOG.md b/CHANGELOG.md
new file mode 100644
--- /dev/null
+++ b/CHANGELOG.md
@@ -0,0 +1,3 @@
+## Unreleased
+
+- Fix the off-by-one in the tokenizer.
"""


def write_batch(batch, runs, n_events):
    tokens = {"prompt": 14000, "completion": 900, "cache_read": 0, "cache_write": 0, "reasoning": 0}
    summary_runs = []
    by_status = {}
    for n in range(1, runs + 1):
        run_id = f"scale-{n:04d}"
        failed = n % 10 == 0
        cost = round(0.01 + (n % 37) * 0.0013, 6)
        attempt = Path(batch, run_id, "attempt-1")
        (attempt / "steps").mkdir(parents=True)
        events = events_for(run_id, n_events)
        with open(attempt / "events.jsonl", "w") as f:
            for e in events:
                f.write(json.dumps(e, separators=(",", ":")) + "\n")
        steps = []
        for i in (1, 2):
            (attempt / "steps" / f"{i}.diff").write_text(DIFF)
            reason = "error" if failed and i == 2 else "finished"
            steps.append({
                "index": i, "message": f"Step {i} of {run_id}.", "started_at": stamp(1_764_561_600 + i * 30),
                "ended_at": stamp(1_764_561_620 + i * 30), "duration_ms": 20000, "end_reason": reason,
                "execution_status": reason, "event_count": n_events // 2, "cost": cost / 2, "tokens": tokens, "llm_calls": 7,
                "final_message": f"Step {i} done.", "error": {"code": "agent_error", "detail": "the agent gave up"} if reason == "error" else None,
                "replies": 0, "completion_latency_ms": 0.1,
                "diff": {"file": f"steps/{i}.diff", "changes": ["A CHANGELOG.md"], "insertions": 3, "deletions": 0, "truncated": False, "error": None},
            })
        status = "failed" if failed else "succeeded"
        report = {
            "format": 1, "ohrun_version": "bench", "job": {"name": "scale", "file": "scale.yaml", "file_hash": "0" * 64},
            "run": {"id": run_id, "index": n, "matrix": {"n": n}, "attempt": 1}, "status": "ended", "rehearsal": True,
            "started_at": stamp(1_764_561_600), "ended_at": stamp(1_764_561_700), "duration_ms": 100000,
            "sandbox": {"kind": "remote", "id": None, "agent_server_url": "http://127.0.0.1:1", "agent_server_version": "1.58.2",
                        "working_dir": "/workspace", "log_file": None, "disposition": "attached", "release_error": None,
                        "provision_ms": 900, "api_retries": [], "candidates": []},
            "setup": [{"command": "make deps", "cwd": "/workspace", "exit_code": 0, "stdout": "ok\n", "stderr": "", "duration_ms": 900,
                       "timed_out": False, "allowed_to_fail": False, "interrupted": False}],
            "conversation_id": "c", "steps": steps,
            "totals": {"cost": cost, "tokens": tokens, "llm_calls": 14, "largest_call": 0.002, "events": n_events, "cost_by_usage": {"agent": cost}},
            "outcome": {"class": status, "exit_code": 1 if failed else 0, "message": "step 2: the agent gave up" if failed else None,
                        "retryable": False, "lacked_resources": False},
            "events_file": "events.jsonl", "notes": [], "warnings": [],
        }
        for where in (attempt, attempt.parent):
            (where / "run.json").write_text(json.dumps(report, indent=2))
        by_status[status] = by_status.get(status, 0) + 1
        summary_runs.append({
            "id": run_id, "index": n, "job": "scale", "job_file": "scale.yaml", "matrix": {"n": n}, "status": status,
            "end_reason": "error" if failed else "finished", "message": report["outcome"]["message"], "attempts": 1,
            "cost": cost, "tokens": tokens, "llm_calls": 14, "duration_ms": 100000, "report": f"{run_id}/run.json",
        })
    summary = {
        "format": 1, "ohrun_version": "bench", "updated_at": stamp(time.time()), "runs": summary_runs,
        "totals": {"runs": runs, "by_status": by_status, "cost": round(sum(r["cost"] for r in summary_runs), 6),
                   "tokens": tokens, "llm_calls": 14 * runs, "duration_ms": 600000},
    }
    Path(batch, "summary.json").write_text(json.dumps(summary, indent=2))


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium is needed (Debian: apt-get install chromium)")


def load(browser, page, profile):
    """(wall seconds, data-ready-ms or None) of one --dump-dom load."""
    start = time.monotonic()
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
                          "--dump-dom", f"file://{page}"], capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - start
    m = re.search(r'data-ready-ms="(\d+)"', out.stdout)
    if 'data-rendered="1"' not in out.stdout and "trivial" not in str(page):
        sys.exit(f"{page} did not render:\n{out.stderr[-2000:]}")
    return wall, int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ohrun", default=str(ROOT / "target/release/ohrun"))
    ap.add_argument("--keep", action="store_true", help="keep the batch directory (its path is printed)")
    args = ap.parse_args()
    browser = chromium()
    work = Path(tempfile.mkdtemp(prefix="ohrun-html-scale-"))
    try:
        batch = work / "batch"
        t0 = time.monotonic()
        write_batch(batch, args.runs, args.events)
        print(f"generated {args.runs} runs x {args.events} events in {time.monotonic() - t0:.1f} s: {batch}")
        t0 = time.monotonic()
        subprocess.run([args.ohrun, "view", "--no-open", "-q", str(batch)], check=True, timeout=600,
                       env={**os.environ, "DISPLAY": "", "WAYLAND_DISPLAY": ""}, stdout=subprocess.DEVNULL)
        print(f"ohrun view wrote {args.runs + 1} pages in {time.monotonic() - t0:.1f} s")
        trivial = work / "trivial.html"
        trivial.write_text("<!doctype html><title>t</title><p>trivial</p>")
        run_page = batch / f"scale-{args.runs // 2:04d}" / "report.html"
        pages = {"trivial": trivial, "batch": batch / "report.html", "run": run_page}
        for name in ("batch", "run"):
            print(f"{name} page: {pages[name].stat().st_size / 1024:.0f} KiB")
        results = {name: [] for name in pages}
        profile = work / "profile"
        load(browser, trivial, profile)  # a first start warms the disk cache
        for _ in range(args.repeat):
            for name, page in pages.items():
                results[name].append(load(browser, page, profile))
        base = statistics.median(w for w, _ in results["trivial"])
        print(f"trivial page: wall {base * 1000:.0f} ms (the browser's start and exit)")
        for name in ("batch", "run"):
            wall = statistics.median(w for w, _ in results[name])
            ready = statistics.median(r for _, r in results[name])
            print(f"{name} page: ready {ready:.0f} ms (median of {args.repeat}; all: {sorted(r for _, r in results[name])}), "
                  f"wall {wall * 1000:.0f} ms, {1000 * (wall - base):.0f} ms over the trivial page")
        if args.keep:
            print(f"kept {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
