"""NTK benchmarks (issue 3): one command, every time measured in this process next to its baseline.

    python benchmarks/bench_ntk.py                 # both parts
    python benchmarks/bench_ntk.py --part exact    # N = 4096: layer-wise exact vs vmap(jacrev) J J^T
    python benchmarks/bench_ntk.py --part topk     # N = 65536: top-32 eigenvalues (+ scipy eigsh baseline)

Model: a 4x256 ReLU coordinate MLP (198,401 parameters, scalar output, torch default init, seed 0),
float32 (the checkpoints' dtype) unless --dtype float64. Uses torch's default thread count.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's inrdiag, not an installed one

from inrdiag import ArchSpec, CoordMLP, make_grid
from inrdiag.device import tune_malloc
from inrdiag.ntk.factors import layer_factors, matmul_sum
from inrdiag.ntk.kernel import lanczos_topk


def model_4x256(dtype):
    torch.manual_seed(0)
    m = CoordMLP(ArchSpec(in_features=2, out_features=1, hidden=[256] * 4)).to(dtype).eval()
    for p in m.parameters():
        p.requires_grad_(True)
    return m


def timed(fn, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def gemm_rate(m, k, n, dtype, repeat=3):
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    t, _ = timed(lambda: a @ b, repeat)
    return 2.0 * m * k * n / t


def jacobian_contraction(model, x, chunk=256):
    """The baseline: J = vmap(jacrev(f)) over samples (chunked), then Theta = J J^T."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(p, x1):
        return functional_call(model, {**p, **buffers}, (x1[None],))[0]

    jf = vmap(jacrev(f), in_dims=(None, 0))
    rows = []
    for s in range(0, x.shape[0], chunk):
        jac = jf(params, x[s : s + chunk])
        rows.append(torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1))  # C = 1
    J = torch.cat(rows)
    return J @ J.T


def part_exact(n_axis: int, dtype, skip_baseline: bool) -> None:
    model = model_4x256(dtype)
    x = make_grid((n_axis, n_axis), dtype=dtype)
    n = x.shape[0]
    print(f"== exact layer-wise decomposition, N = {n:,}, {model.num_parameters:,} parameters, {dtype} ==")

    tune_malloc()  # as `inrdiag ntk` does (process-wide: the baseline below gets it too)
    scratch = torch.empty(n, n, dtype=dtype)

    def ours():
        factors = layer_factors(model, x)
        kernels = [f.compressed().kernel(scratch=scratch) for f in factors]  # every Theta_g, kept; dead columns dropped
        theta = kernels[0].clone()
        for K in kernels[1:]:
            theta.add_(K)
        return factors, kernels, theta

    ours()  # warm-up
    t_ours, (factors, kernels, theta) = timed(ours, 3)
    t_fac, _ = timed(lambda: layer_factors(model, x), 3)
    flops = sum(f.compressed().flops_kernel() for f in factors)
    full = sum(f.flops_kernel() for f in factors)
    rate = gemm_rate(n, 256, n, dtype)
    floor = flops / rate
    print(f"layer-wise (factors + {len(kernels)} kernels + sum): {t_ours:.3f} s  (factors alone {t_fac:.3f} s)")
    print(
        f"  flops {flops / 1e9:.1f} GFLOP (sum_g 2 N^2 (p_A + p_D) after dropping dead columns; all columns: "
        f"{full / 1e9:.1f}); plain GEMM {n}x256x{n}: {rate / 1e9:.1f} GFLOP/s"
    )
    print(f"  GEMM-bound floor {floor:.3f} s -> measured / floor = {t_ours / floor:.2f}x")
    if skip_baseline:
        return
    t_ref, ref = timed(lambda: jacobian_contraction(model, x))
    err = float((theta.double() - ref.double()).norm() / ref.double().norm())
    print(f"torch.func vmap(jacrev) + J J^T: {t_ref:.3f} s")
    print(
        f"  speed-up layer-wise vs Jacobian contraction: {t_ref / t_ours:.1f}x  (relative Frobenius difference {err:.1e})"
    )


def part_topk(n_axis: int, k: int, block: int, tol: float, dtype, baseline: bool, lowrank: bool = True) -> None:
    model = model_4x256(dtype)
    x = make_grid((n_axis, n_axis), dtype=dtype)
    n = x.shape[0]
    print(f"== top-{k} eigenvalues of Theta, N = {n:,} ({n_axis}x{n_axis} grid), {dtype} products ==")
    t0 = time.perf_counter()
    factors = layer_factors(model, x)
    t_fac = time.perf_counter() - t0
    comp = [f.compressed() for f in factors]
    t_comp = time.perf_counter() - t0 - t_fac
    trace = sum(float(f.diag().double().sum()) for f in comp)
    res, bound, used, _ = lanczos_topk(comp, n, k, tol, trace, torch.device("cpu"), dtype, block=block, lowrank=lowrank)
    t_total = time.perf_counter() - t0
    flops = sum(f.flops_matmul(1) for f in used)
    dead = sum(f.flops_matmul(1) for f in comp)
    full = sum(f.flops_matmul(1) for f in factors)
    print(
        f"block Lanczos (block {block}, tol {tol:g}, low-rank products {'on' if lowrank else 'off'}): {t_total:.2f} s "
        f"total = factors {t_fac:.2f} s + dead-column drop {t_comp:.2f} s + compression and eigensolver "
        f"{t_total - t_fac - t_comp:.2f} s; {res.products} products"
    )
    print(
        f"  product: {flops / 1e9:.1f} GFLOP per vector (dead columns dropped: {dead / 1e9:.1f}; full: {full / 1e9:.1f}); "
        f"kept columns (A, D) per layer: {[(f.A.shape[1], f.D.shape[1]) for f in used]}"
    )
    worst = max(r + bound / float(v) for r, v in zip(res.relative_residuals, res.values))
    print(
        f"  accuracy check: max ||Theta' u - theta u|| / theta = {max(res.relative_residuals):.2e} "
        f"(converged {res.converged}); compression bound ||Theta - Theta'|| <= {bound:.3g}; "
        f"so max ||Theta u - theta u|| / theta <= {worst:.2e}; lambda_1 {float(res.values[0]):.6g}, "
        f"lambda_{k} {float(res.values[-1]):.6g}"
    )
    rate = gemm_rate(256, n, 256 * block, dtype)
    floor = res.products * flops / rate
    print(
        f"  GEMM-bound floor for those products at {rate / 1e9:.1f} GFLOP/s: {floor:.2f} s "
        f"-> eigensolver / floor = {(t_total - t_fac - t_comp) / floor:.2f}x"
    )
    if not baseline:
        return
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    count = [0]

    def mv(v):
        count[0] += 1
        V = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(n, 1)).to(dtype)
        return matmul_sum(factors, V).double().numpy().ravel()

    t0 = time.perf_counter()
    vals = eigsh(LinearOperator((n, n), matvec=mv, dtype=np.float64), k=k, which="LA", return_eigenvectors=False,
                 v0=np.ones(n))  # fmt: skip
    t_e = time.perf_counter() - t0 + t_fac
    vals = np.sort(vals)[::-1]
    diff = float(np.max(np.abs(vals - res.values.numpy()) / vals))
    print(
        f"baseline scipy eigsh (ARPACK, single-vector factorised product): {t_e:.2f} s incl. factors; {count[0]} products"
    )
    print(f"  speed-up block Lanczos vs eigsh: {t_e / t_total:.2f}x; max relative eigenvalue difference {diff:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "exact", "topk"], default="all")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--grid-exact", type=int, default=64, help="points per axis for the exact part (64: N = 4096)")
    ap.add_argument("--grid-topk", type=int, default=256, help="points per axis for the top-k part (256: N = 65536)")
    ap.add_argument("--top-k", type=int, default=32)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--skip-baseline", action="store_true", help="skip the slow vmap(jacrev) and eigsh baselines")
    ap.add_argument("--no-lowrank", action="store_true", help="top-k: run the products on the uncompressed factors")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    if args.part in ("all", "exact"):
        part_exact(args.grid_exact, dtype, args.skip_baseline)
    if args.part in ("all", "topk"):
        part_topk(args.grid_topk, args.top_k, args.block, args.tol, dtype, not args.skip_baseline, not args.no_lowrank)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
