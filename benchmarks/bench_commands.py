"""Whole commands as users run them (issue 15), each next to its baseline measured in the same run.

    python benchmarks/bench_commands.py                    # all three targets, best of --repeats
    python benchmarks/bench_commands.py --only ntk-exact   # one of: ntk-exact, ntk-topk, rank
    python benchmarks/bench_commands.py --old-default      # also the old float64 default of ntk-topk (slow)

Every command runs this checkout's code (``python -m inrdiag`` with PYTHONPATH) in a fresh process on
``examples/checkpoints/relu_4x256.safetensors``; printed per line: best and median wall time over
``--repeats``, the child's CPU time (user + sys: less sensitive to other jobs than the wall time),
and the ratio against the baseline of the same run:

- ``ntk MODEL`` (N = 4,096, exact, ``--dtype auto``) against ``--dtype float64`` (the old default:
  every eigenvalue of Theta and of every group by float64 eigvalsh) and against a process that only
  imports torch and the CLI (the floor of any command). Target: <= 5 s.
- ``ntk MODEL --grid 256 --top-k 32`` (N = 65,536, Lanczos, ``--dtype auto``) against the solver
  alone in this process (factors + dead-column drop + low-rank Lanczos, what ``bench_ntk.py --part topk``
  times). Targets: <= 15 s and <= 1.3x the solver.
- ``ntk SIREN`` (the shipped 3x64 SIREN, N = 4,096: a flat spectrum, so dense eigensolves) against the
  import-only process.
- ``rank MODEL`` (256 x 256) against the import-only process. Target: <= 3 s.
- ``--old REV``: every command also with the code of git revision REV, alternated with this checkout's run by
  run; the ratio new / old of one run.
- ``--help`` (the console script's start-up: it must not import torch) against a bare ``python -c pass``
  and against ``import torch``. Target: <= 0.3 s.

The load average is printed at the start and at the end; on a shared machine compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "examples" / "checkpoints" / "relu_4x256.safetensors"
sys.path.insert(0, str(ROOT))  # this checkout's inrdiag, not an installed one

from bench_ntk import FLOOR, compare_auto_float64, fresh, line, old_tree, solver_topk  # noqa: E402  (one definition of each, beside this script)

SIREN = ROOT / "examples" / "checkpoints" / "siren_3x64.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["help", "ntk-exact", "ntk-siren", "ntk-topk", "rank"], default=None)
    ap.add_argument("--old-default", action="store_true", help="also time ntk-topk with --dtype float64")
    ap.add_argument("--old", default=None, metavar="REV",
                    help="also time every command with the code of git revision REV, in this run")  # fmt: skip
    a = ap.parse_args()
    before = old_tree(a.old) if a.old else None

    def merged(runs: list[dict]) -> dict:
        """One result of single runs: best and median wall time, least CPU time, the last run's output."""
        walls = sorted(r["best"] for r in runs)
        return {"best": walls[0], "median": walls[len(walls) // 2], "cpu": min(r["cpu"] for r in runs),
                "sys": min(r["sys"] for r in runs), "faults": min(r["faults"] for r in runs),
                "out": runs[-1]["out"]}  # fmt: skip

    def timed(args: list[str]) -> tuple[dict, dict | None]:
        """``args`` with this checkout's code and, with --old, alternated run by run with the code of REV
        (so a drift of the machine's speed during the runs weighs on both alike)."""
        if before is None:
            return fresh(args, a.repeats), None
        new, prev = [], []
        for _ in range(a.repeats):
            new.append(fresh(args, 1))
            prev.append(fresh(args, 1, tree=before))
        return merged(new), merged(prev)

    def versus_old(name: str, new: dict, prev: dict | None) -> None:
        if prev is not None:
            line(f"{name} at {a.old}", prev)
            line(f"{name}, this checkout", new, prev, f"the code of {a.old} (alternated)")

    import torch

    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average at the start {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    if a.only in (None, "help"):
        bare = fresh(["-c", "pass"], max(a.repeats, 5))
        torch_only = fresh(["-c", "import torch"], a.repeats)
        hlp = fresh(["--help"], max(a.repeats, 5))
        line("python -c pass (interpreter start-up)", bare)
        line("inrdiag --help", hlp, torch_only, "an 'import torch' process")
        print(f"  --help - interpreter start-up: {hlp['best'] - bare['best']:.2f} s")
        if a.only == "help":
            return
    imp = fresh(["-c", FLOOR], a.repeats)
    line("import torch + inrdiag.cli only (floor of any command)", imp)
    model = str(CKPT)
    if a.only in (None, "ntk-exact"):
        auto, prev = timed(["ntk", model, "--json"])
        versus_old("ntk MODEL (N=4096)", auto, prev)
        old = fresh(["ntk", model, "--json", "--dtype", "float64"], a.repeats)
        line("ntk MODEL (N=4096, exact, --dtype auto)", auto, old, "the float64 run")
        line("ntk MODEL --dtype float64 (old default)", old)
        d, d64 = json.loads(auto["out"]), json.loads(old["out"])
        print(f"  auto - import-only: {auto['best'] - imp['best']:.2f} s")
        compare_auto_float64(d, d64)
    if a.only in (None, "ntk-siren"):
        sargs = ["ntk", str(SIREN), "--json"]
        sir, prev = timed(sargs)
        line("ntk SIREN (3x64, N=4096, --dtype auto)", sir, imp, "the import-only process")
        versus_old("ntk SIREN (N=4096)", sir, prev)
        d = json.loads(sir["out"])
        print(f"  seconds in the JSON: { {k: round(v, 2) for k, v in d['seconds'].items()} }; spectra: "
              f"Theta {d['spectrum']}, groups {[g['spectrum'] for g in d['layers']]}")  # fmt: skip
    if a.only in (None, "ntk-topk"):
        cmd = ["ntk", model, "--grid", "256", "--top-k", "32", "--json"]
        # the command and the solver alternated (one of each per round), so a drift of the machine's speed
        # during the ~20 s runs weighs on both sides of the ratio alike
        runs, solves, olds = [], [], []
        for _ in range(a.repeats):
            runs.append(fresh(cmd, 1))
            solves.append(solver_topk(1))
            if before is not None:
                olds.append(fresh(cmd, 1, tree=before))
        top = merged(runs)
        solver = min(solves)
        versus_old("ntk MODEL --grid 256 --top-k 32", top, merged(olds) if olds else None)
        print(f"solver alone in this process (factors + low-rank Lanczos, float32, best of {a.repeats}, alternated "
              f"with the command): {solver:.2f} s", flush=True)  # fmt: skip
        line("ntk MODEL --grid 256 --top-k 32 (--dtype auto)", top, {"best": solver}, "the solver")
        d = json.loads(top["out"])
        print(f"  {d['precision']}; {d['accuracy']['products']} products; max relative error bound "
              f"{d['accuracy']['max_relative_error_bound']:.2e}; seconds in the JSON: "
              f"{ {k: round(v, 2) for k, v in d['seconds'].items()} }")  # fmt: skip
        if a.old_default:
            old = fresh([*cmd, "--dtype", "float64"], 1)
            line("ntk MODEL --grid 256 --top-k 32 --dtype float64 (old default, 1 run)", old)
            print(f"  auto is {old['best'] / top['best']:.2f}x faster than the old default")
    if a.only in (None, "rank"):
        rk, prev = timed(["rank", model, "--json"])
        line("rank MODEL (256x256)", rk, imp, "the import-only process")
        versus_old("rank MODEL (256x256)", rk, prev)
        print(f"  rank - import-only: {rk['best'] - imp['best']:.2f} s")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
