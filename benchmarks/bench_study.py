"""Wall time of one compare study run four ways on this machine: one process (torch's default threads),
one process with 1 thread, ``torchrun --nproc-per-node 2`` (2 gloo ranks, cores/2 threads each) and
``--jobs 2`` (2 local workers, cores/2 threads each).

    python benchmarks/bench_study.py                       # 8 photographs x 2 inits x 1 seed, 32x32, 300 steps
    python benchmarks/bench_study.py --images 12 --steps 500 --rounds 2

Each mode is a fresh ``inrdiag compare`` process (start-up and torch import included, as a user
sees it) with its own run folder; modes are interleaved over ``--rounds`` rounds and the best round
is kept, so a burst of other work on a shared machine hurts every mode alike. Every mode's per-job
numbers are checked to be identical to the first mode's (the contract of a study).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's inrdiag, also in the workers started below


def run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def metrics(run_dir: Path) -> dict[str, float]:
    out = {}
    for f in (run_dir / "jobs").glob("*.json"):
        rec = json.loads(f.read_text())
        out[rec["key"]] = rec["result"]["metric"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--inits", default="default,rank-expand")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--skip-default-threads",
        action="store_true",
        help="leave out one process with torch's default threads (very slow on a busy machine)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-study-"))
    data = work / "images"
    data.mkdir()
    for p in sorted((ROOT / "examples" / "cohort").glob("*.png"))[: args.images]:
        shutil.copy(p, data / p.name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = ["compare", str(data), "--inits", args.inits, "--seeds", str(args.seeds), "--size", str(args.size),
            "--steps", str(args.steps), "--device", "cpu", "--json"]  # fmt: skip
    py = [sys.executable, "-m", "inrdiag"]
    modes = {
        "1 process, default threads": lambda out, port: py + base + ["--out", out],
        "1 process, --threads 1": lambda out, port: py + base + ["--out", out, "--threads", "1"],
        "torchrun, 2 ranks": lambda out, port: [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "-m",
            "inrdiag",
            *base,
            "--out",
            out,
        ],  # fmt: skip
        "--jobs 2": lambda out, port: py + base + ["--out", out, "--jobs", "2"],
    }
    import torch

    if args.skip_default_threads:
        del modes["1 process, default threads"]
    from inrdiag.study.distributed import cores, free_port

    jobs = args.images * len(args.inits.split(",")) * args.seeds
    print(f"torch {torch.__version__}, {cores()} cores, default threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    print(f"study: {args.images} images at {args.size}x{args.size} x inits {args.inits} x {args.seeds} seed(s) = "
          f"{jobs} fits of {args.steps} steps (3x128 MLP)")  # fmt: skip
    best: dict[str, float] = {}
    ref = None
    for r in range(args.rounds):
        for name, make in modes.items():
            out = work / f"run-{r}-{list(modes).index(name)}"
            seconds = run(make(str(out), free_port()), env)
            best[name] = min(best.get(name, float("inf")), seconds)
            got = metrics(out)
            ref = ref or got
            same = got == ref
            print(f"round {r + 1}  {name:28s} {seconds:8.1f} s   per-job metrics identical to the first: {same}")
            if not same:
                raise SystemExit(f"{name}: per-job numbers differ from the first mode")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    first_name = next(iter(modes))
    first = best[first_name]
    print(f"\nbest round, speed-up against {first_name}:")
    for name, seconds in best.items():
        print(f"  {name:28s} {seconds:8.1f} s   {first / seconds:5.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
