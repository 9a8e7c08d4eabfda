"""Benchmark `inrdiag rank` on a 4x256 ReLU MLP at the default 256x256 grid.

    python benchmarks/bench_rank.py [--repeats 3]

Prints (1) the wall time of the whole command `python -m inrdiag rank --json` in a fresh process
(start-up, torch import, load, spectra, output) — the figure issues 2 and 15 bound at 3 s — with its
CPU time (user + sys of the child: less sensitive to other jobs than the wall time) and a fresh
process that only imports torch and inrdiag.cli (the floor of any command); (2) the engine alone
(`rank_report`), and (3) the baseline in the same process: the same spectra by the direct route, a
float64 forward pass then `torch.linalg.svdvals` of each N x 256 matrix Z_k, with the ratio
baseline / engine and the largest relative difference of the singular values above 1e-3 s_1.
The load average is printed at the start and the end: compare ratios from one run, not absolute times
across runs. The command runs this checkout's code (PYTHONPATH), not an installed `inrdiag`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "examples" / "checkpoints" / "relu_4x256.safetensors"
sys.path.insert(0, str(ROOT))  # this checkout's inrdiag, not an installed one

from bench_ntk import FLOOR, compiled  # noqa: E402  (one definition, beside this script)

import inrdiag  # noqa: E402
from inrdiag.spectra import GRAM_BLOCK, rank_report  # noqa: E402


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_fresh(cmd, repeats, cwd):
    """(best wall, median wall, best child CPU seconds) of ``cmd`` in fresh processes (this checkout's bytecode
    compiled first, as an installed package has it: ``bench_ntk.compiled``)."""
    compiled(ROOT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = child_cpu(), time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=cwd, env=env)
        walls.append(time.perf_counter() - t0)
        cpus.append(child_cpu() - c0)
    return min(walls), statistics.median(walls), min(cpus)


def best(f, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), out


def baseline(model, n):
    m = model.double()
    x = inrdiag.make_grid((n, n))
    with torch.no_grad():
        tr = m.trace(x)
    return [torch.linalg.svdvals(z) for z in tr.post]


def grams_alone(model, repeats: int) -> None:
    """The four hidden Grams Z_k^T Z_k over the grid (float64, chunks of 8192 rows) alone: full GEMMs against
    their lower block triangle in column blocks of GRAM_BLOCK (what rank_report computes), same process."""
    from inrdiag.models.adapter import as_adapter

    ad = as_adapter(model).copy(torch.device("cpu"), torch.float64)
    x = inrdiag.make_grid((256, 256), dtype=torch.float64)
    with torch.no_grad():
        zs = [ad.all_features(x[s : s + 8192]) for s in range(0, x.shape[0], 8192)]

    def grams(block: int) -> None:
        for k in ad.hidden:
            w = zs[0][k].shape[1]
            g = torch.zeros(w, w, dtype=torch.float64)
            for z in zs:
                a = z[k]
                for c in range(0, w, block):
                    e = min(w, c + block)
                    g[c:e, :e].addmm_(a[:, c:e].T, a[:, :e])

    full, _, _ = best(lambda: grams(1 << 30), repeats)
    tri, _, _ = best(lambda: grams(GRAM_BLOCK), repeats)
    print(f"the {len(ad.hidden)} Grams alone: full GEMMs {full:.2f} s, lower block triangle (blocks of {GRAM_BLOCK}) "
          f"{tri:.2f} s: {full / tri:.2f}x")  # fmt: skip


def chunk_sizes(model, repeats: int) -> None:
    """``gram_spectra`` (the float64 forward and the Grams, what rank_report runs) with chunks of
    ``spectra.CHUNK`` rows against 8192 (the chunk before 2026-12-01 night) and 512, alternated."""
    from inrdiag.models.adapter import as_adapter
    from inrdiag.spectra import CHUNK, gram_spectra

    ad = as_adapter(model).copy(torch.device("cpu"), torch.float64)
    sizes = (CHUNK, 8192, 512)
    times = dict.fromkeys(sizes, float("inf"))
    for _ in range(max(repeats, 3)):
        for c in sizes:
            t = time.perf_counter()
            gram_spectra(ad, (256, 256), "cpu", c)
            times[c] = min(times[c], time.perf_counter() - t)
    print("forward + Grams by chunk rows (best, alternated): "
          + ", ".join(f"{c}: {times[c]:.2f} s" for c in sizes) + f"; {CHUNK} / 8192 = {times[CHUNK] / times[8192]:.2f}x")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "inrdiag", "rank", str(CKPT), "--json"]
        wall, wall_med, wcpu = run_fresh(cmd, args.repeats, tmp)
        imp, imp_med, icpu = run_fresh([sys.executable, "-c", FLOOR], args.repeats, tmp)
    print(f"inrdiag rank (whole command, 4x256, 256x256 grid): best {wall:.2f} s, median {wall_med:.2f} s; "
          f"CPU {wcpu:.2f} s")  # fmt: skip
    print(
        f"fresh process importing torch + inrdiag.cli only: best {imp:.2f} s, median {imp_med:.2f} s; CPU {icpu:.2f} s"
    )
    loaded = inrdiag.load(CKPT)
    eng, eng_med, rep = best(lambda: rank_report(loaded.model, grid=256, device="cpu"), args.repeats)
    print(f"engine rank_report: best {eng:.2f} s, median {eng_med:.2f} s")
    print(f"whole command / engine: {wall / eng:.2f}x; whole command - import-only process: {wall - imp:.2f} s")
    base, base_med, svals = best(lambda: baseline(inrdiag.load(CKPT).model, 256), args.repeats)
    print(f"baseline forward + svdvals (float64): best {base:.2f} s, median {base_med:.2f} s")
    print(f"ratio baseline / engine: {base / eng:.2f}x")
    worst = 0.0
    for layer, s in zip(rep.layers, svals):
        got = torch.tensor(layer.representation.singular_values, dtype=torch.float64)
        keep = s > 1e-3 * s[0]
        worst = max(worst, float(((got[keep] - s[keep]).abs() / s[keep]).max()))
    print(f"max relative difference of singular values above 1e-3 s_1: {worst:.2e}")
    grams_alone(loaded.model, args.repeats)
    chunk_sizes(loaded.model, args.repeats)
    a = torch.randn(2048, 2048, dtype=torch.float64)
    gemm, _, _ = best(lambda: a @ a, args.repeats)
    rate = 2 * 2048**3 / gemm

    # forward through every hidden layer + each hidden layer's Gram Z^T Z, its lower block triangle (GRAM_BLOCK)
    def gram_flops(w: int) -> int:
        return sum(2 * 65536 * (min(w, c + GRAM_BLOCK) - c) * min(w, c + GRAM_BLOCK) for c in range(0, w, GRAM_BLOCK))

    flops = sum(2 * 65536 * o * i for o, i in loaded.spec.layer_shapes[:-1]) + sum(
        gram_flops(w) for w in loaded.spec.hidden
    )
    print(
        f"float64 GEMM rate: {rate / 1e9:.1f} GFLOP/s; engine work {flops / 1e9:.1f} GFLOP -> floor {flops / rate:.2f} s; "
        f"engine / floor {eng / (flops / rate):.2f}x"
    )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
