"""`ohrun plan`/`validate` at scale, two binaries interleaved (bench/plan.sh needs hyperfine; this does not):
the jobs of bench/gen-matrix-job.sh (100,000 and 10,000 runs), ROUNDS (7) rounds, the order of the binaries
alternating each round, output to /dev/null; medians (min–max) as a markdown table.

    python3 bench/plan_interleaved.py BEFORE_BINARY AFTER_BINARY
"""
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
bins = {"before": sys.argv[1], "after": sys.argv[2]}
d = tempfile.mkdtemp()
for name, a, b in [("100k", "100", "1000"), ("10k", "100", "100")]:
    with open(f"{d}/{name}.yaml", "w") as f:
        subprocess.run([ROOT / "bench/gen-matrix-job.sh", a, b], stdout=f, check=True)
cmds = {"plan` of 100,000 runs": ["plan", "--max-runs", "100000", f"{d}/100k.yaml"],
        "validate` of 10,000 runs": ["validate", "--max-runs", "100000", f"{d}/10k.yaml"],
        "plan` of 10,000 runs": ["plan", "--max-runs", "100000", f"{d}/10k.yaml"]}
rounds = int(os.environ.get("ROUNDS", "7"))


def once(binary, args):
    start = time.perf_counter()
    subprocess.run([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


for b in bins.values():  # warm-up: the page cache, not the measurement
    for args in cmds.values():
        once(b, args)
res = {(b, c): [] for b in bins for c in cmds}
for r in range(rounds):
    for c, args in cmds.items():
        for b in (list(bins) if r % 2 == 0 else list(bins)[::-1]):
            res[(b, c)].append(once(bins[b], args))
print(f"{rounds} rounds, interleaved; median (min–max)\n")
print("| command | before | after |\n|---|---|---|")
for c in cmds:
    cells = [f"{statistics.median(res[(b, c)]):.0f} ms ({min(res[(b, c)]):.0f}–{max(res[(b, c)]):.0f})" for b in bins]
    print(f"| `ohrun {c} | " + " | ".join(cells) + " |")
