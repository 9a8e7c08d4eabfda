"""The thread policy on a shared machine: the README's main job idle and beside one CPU-bound process.

    python benchmarks/bench_threads.py [--steps 300]

Runs, as whole commands in fresh processes, the README's main job
(`inrdiag compare examples/images/camera.png --inits default,rank-expand --seeds 1 --steps N`):

1. idle, default settings (the load policy sees free CPUs and uses all of them);
2. beside one other CPU-bound process (a Python busy loop), with torch's old default forced
   (`--threads <all CPUs>`): the oversubscribed case the policy exists for;
3. beside the same process with the default settings (the policy).

It prints each wall time and the ratios the issue bounds: (3) / (1) (target <= 2) and (2) / (3)
(what the policy saves). Run it on an otherwise idle machine: the load it measures must be its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "images" / "camera.png"


def job(steps: int, extra: list[str], tmp: str) -> float:
    cmd = ["inrdiag", "compare", str(IMAGE), "--inits", "default,rank-expand", "--seeds", "1",
           "--steps", str(steps), "--json", *extra]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "INRDIAG_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    from inrdiag.threads import choose_threads, usable_cpus

    cpus = usable_cpus()
    print(f"machine: {cpus} usable CPUs, load average {os.getloadavg()[0]:.2f}; policy now: "
          f"{choose_threads(environ={}).describe()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        idle = job(args.steps, [], tmp)
        print(f"1. idle, default (policy):             {idle:7.1f} s")
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)  # let the scheduler see it
            forced = job(args.steps, ["--threads", str(cpus)], tmp)
            print(f"2. one busy process, --threads {cpus}:      {forced:7.1f} s")
            policy = job(args.steps, [], tmp)
            print(f"3. one busy process, default (policy): {policy:7.1f} s  "
                  f"({choose_threads(environ={}).describe()})")  # fmt: skip
        finally:
            hog.kill()
            hog.wait()
    print(f"policy under load / idle: {policy / idle:.2f}x (target <= 2); "
          f"forced {cpus} threads / policy under load: {forced / policy:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
