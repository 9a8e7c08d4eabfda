"""Cyclic garbage collection in a command's process: with and without ``inrdiag.cli.gc_until_torch``.

    python benchmarks/bench_startup.py --repeats 3

Each round runs ``ntk MODEL --json`` (the 4x256 example, N = 4,096) in two fresh processes, one as the
console entry runs it (the collector off while torch is imported, then ``gc.freeze``) and one with the
collector left alone, alternated; each child sums the time its collections take (``gc.callbacks``) and
its wall time from before importing torch to the command's end. Printed: best of ``--repeats`` of both,
and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "examples" / "checkpoints" / "relu_4x256.safetensors"

CHILD = """
import gc, io, json, os, sys, time
spent, count, start = [0.0], [0], [0.0]
def timer(phase, info):
    if phase == "start":
        start[0] = time.perf_counter()
    else:
        spent[0] += time.perf_counter() - start[0]
        count[0] += 1
gc.callbacks.append(timer)
import inrdiag.cli as c
t0 = time.perf_counter()
if sys.argv[1] == "hook":
    c.gc_until_torch()
out, sys.stdout = sys.stdout, io.StringIO()
code = c.main(sys.argv[2:])
sys.stdout = out
print(json.dumps({"gc": spent[0], "collections": count[0], "wall": time.perf_counter() - t0, "code": code}))
sys.stdout.flush()
os._exit(0)
"""


def run(mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", CHILD, mode, "ntk", str(CKPT), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env).stdout
    res = json.loads(out.strip().splitlines()[-1])
    if res["code"] != 0:
        raise SystemExit(f"the command failed in mode {mode}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average at the start {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[dict]] = {"plain": [], "hook": []}
    for _ in range(a.repeats):
        for mode in runs:
            runs[mode].append(run(mode))
    best = {m: {k: min(r[k] for r in rs) for k in ("gc", "wall")} for m, rs in runs.items()}
    for m, label in (("plain", "collector left alone"), ("hook", "gc_until_torch (as the console entry)")):
        n = min(r["collections"] for r in runs[m])
        print(
            f"{label}: collections {best[m]['gc']:.3f} s ({n}+ of them), wall {best[m]['wall']:.2f} s (best of {a.repeats})"
        )
    print(
        f"collections: {best['hook']['gc'] / best['plain']['gc']:.3f}x; wall: {best['hook']['wall'] / best['plain']['wall']:.2f}x"
    )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
