"""NTK benchmarks (issues 3 and 15): one command, every time measured in this process next to its baseline.

    python benchmarks/bench_ntk.py                      # every part
    python benchmarks/bench_ntk.py --part commands      # the two whole commands of issue 15 (below)
    python benchmarks/bench_ntk.py --part commands --old 021015b   # ... and the same commands at that revision
    python benchmarks/bench_ntk.py --part exact         # N = 4096: layer-wise exact vs vmap(jacrev) J J^T
    python benchmarks/bench_ntk.py --part topk          # N = 65536: top-32 eigenvalues (+ scipy eigsh baseline)

``--part commands`` runs ``python -m inrdiag ntk`` (this checkout) in fresh processes on
examples/checkpoints/relu_4x256.safetensors, best of ``--repeats``, each next to its baseline:

- ``ntk MODEL`` (N = 4,096, the default ``--dtype auto``): target <= 5 s. Baselines: the same command with
  ``--dtype float64`` (every eigenvalue by float64 eigvalsh, the old path's solver for Theta and the
  reference), and a process that only imports torch and the CLI (the floor of any command). Also printed:
  the accuracy of the default against the float64 run (eigenvalues, effective and numerical ranks).
- ``ntk MODEL --grid 256 --top-k 32`` (N = 65,536, Lanczos): targets <= 15 s and <= 1.3x the solver alone
  in this process (factors + dead-column drop + low-rank block Lanczos, float32 products).

``--old REV`` also runs both commands with the code of git revision REV (extracted with ``git archive``), in
the same run: the old path next to the new one.

Both the children and this process run with the same thread count (``--threads``; default: what the
command line's load policy picks at the start, ``inrdiag.threads``), so the ratios compare like with like.

Model of the in-process parts: a 4x256 ReLU coordinate MLP (198,401 parameters, scalar output, torch
default init, seed 0), float32 (the checkpoints' dtype) unless --dtype float64.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's inrdiag, not an installed one

from inrdiag import ArchSpec, CoordMLP, make_grid
from inrdiag.device import tune_malloc
from inrdiag.ntk.factors import gram64, layer_factors, matmul_sum
from inrdiag.ntk.kernel import lanczos_topk

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "examples" / "checkpoints" / "relu_4x256.safetensors"
#: The floor of any command: a process that imports torch and the CLI and exits as a command does
#: (``inrdiag.cli.leave``: no interpreter teardown).
FLOOR = "import inrdiag.cli as c; c.gc_until_torch(); import torch; c.leave(0)"  # a command's start-up (console_main)


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


def rectangle_cut(f, budget: float):
    """The cut ``Factor.lowrank`` made before the staircase (the baseline): A to its eigen-directions above
    ``mu_A = budget / 2 / max_n |d_n|^2``, then D above ``budget / 2 / max_n |a'_n|^2`` (Schur's bound on
    each side). Returns (factor, bound)."""
    from inrdiag.ntk.dense import dense_eigh

    def rowmax(X):
        return float(torch.linalg.vector_norm(X, dim=1, dtype=torch.float64).max()) ** 2

    def cut(X, mu):
        e = dense_eigh(gram64(X))
        drop = min(int((e.values <= mu).sum()), X.shape[1] - 1)
        if drop <= 0:
            return X, 0.0
        return (X @ e.vectors[:, drop:].to(X.dtype)).contiguous(), float(e.values[drop - 1].clamp_min(0))

    if min(f.A.shape[1], f.D.shape[1]) <= 4:
        return f, 0.0
    dmax = rowmax(f.D)
    A2, ea = cut(f.A, 0.5 * budget / dmax) if dmax > 0 else (f.A, 0.0)
    amax = rowmax(A2)
    D2, ed = cut(f.D, 0.5 * budget / amax) if amax > 0 else (f.D, 0.0)
    return f.with_factors(A2, D2), ea * dmax + ed * amax


def float64_row_stats(X, edges, chunk: int = 4096):
    """The staircase's row statistics as computed before 2026-12-01 late night (the baseline): each row chunk
    copied to float64, then the suffix sums of squares and the groups' sums of squares, their max over rows."""
    tail = torch.zeros(X.shape[1], dtype=torch.float64)
    group = torch.zeros(len(edges) - 1, dtype=torch.float64)
    for s in range(0, X.shape[0], chunk):
        c = X[s : s + chunk].flip(1).to(torch.float64)
        c.square_().cumsum_(1)
        tail = torch.maximum(tail, c.max(0).values)
        c = X[s : s + chunk].to(torch.float64, copy=True).square_()
        sums = torch.stack([c[:, a:b].sum(1) for a, b in zip(edges[:-1], edges[1:])], dim=1)
        group = torch.maximum(group, sums.max(0).values)
    return tail.flip(0), group


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

    def ours():
        factors = layer_factors(model, x)
        kernels = [f.compressed().kernel() for f in factors]  # every Theta_g, kept; dead columns dropped
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
        f"  flops {flops / 1e9:.1f} GFLOP (sum_g N (N + 256) (p_A + p_D): lower block triangles, dead columns dropped; all columns: "
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
    sol = lanczos_topk(comp, n, k, tol, trace, torch.device("cpu"), dtype, block=block, lowrank=lowrank)
    res, bound, used = sol.topk, sol.bound, sol.factors
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
        f"kept columns (A, D) of each part, per layer: {[[(c.A.shape[1], c.D.shape[1]) for c in f.parts] for f in used]}"
    )
    worst = max(r + bound / float(v) for r, v in zip(res.relative_residuals, res.values))
    print(
        f"  accuracy check: max ||Theta' u - theta u|| / theta = {max(res.relative_residuals):.2e} "
        f"(converged {res.converged}); compression bound ||Theta - Theta'|| <= {bound:.3g}; "
        f"so max ||Theta u - theta u|| / theta <= {worst:.2e}; lambda_1 {float(res.values[0]):.6g}, "
        f"lambda_{k} {float(res.values[-1]):.6g}"
    )
    # the command works on its own factors in place (Factor.compressed(reuse=True), lowrank_all(overwrite=True)):
    # alternated against copies, each on fresh clones (made outside the timing); in this warm process the
    # copies' new memory is mostly reused, so this shows the copying, not the first-touch page faults
    # that bench_commands.py's fresh processes count
    import inrdiag.ntk.lowrank as L

    def clones(fs: list) -> list:
        return [f.with_factors(f.A.clone(), f.D.clone()) for f in fs]

    drop = {True: float("inf"), False: float("inf")}
    cut = {True: float("inf"), False: float("inf")}
    budget0 = 6.0 * tol * trace / n
    for _ in range(2):
        for reuse in (True, False):
            fs = clones(factors)
            t = time.perf_counter()
            packed = [f.compressed(reuse=reuse) for f in fs]
            drop[reuse] = min(drop[reuse], time.perf_counter() - t)
            del fs
            t = time.perf_counter()
            L.lowrank_all(packed, budget0, overwrite=reuse)
            cut[reuse] = min(cut[reuse], time.perf_counter() - t)
            del packed
    print(
        f"  in place (the command) against copies: dead-column drop {drop[True]:.3f} s against {drop[False]:.3f} s "
        f"({drop[True] / drop[False]:.2f}x); the cut (rotations) {cut[True]:.2f} s against {cut[False]:.2f} s "
        f"({cut[True] / cut[False]:.2f}x)"
    )
    wide = max(comp, key=lambda f: f.A.shape[1]).A
    whole = timed(lambda: gram64(wide, chunk=n), repeat=3)[0]
    chunked = timed(lambda: gram64(wide), repeat=3)[0]
    print(f"  compression Gram of a {n} x {wide.shape[1]} factor in float64: converted whole {whole:.3f} s, by row "
          f"chunks (gram64's default) {chunked:.3f} s")  # fmt: skip
    V = torch.randn(n, block, dtype=dtype)
    X = used[-1].parts[0].A  # the head's cut X (D: ones)
    Xt = X.T.contiguous()
    view = timed(lambda: X.T @ V, repeat=5)[0]
    copy = timed(lambda: Xt @ V, repeat=5)[0]
    print(f"  X^T V for the head's X ({n} x {X.shape[1]}): from a transposed view {view * 1e3:.1f} ms, from a "
          f"contiguous X^T {copy * 1e3:.1f} ms ({view / copy:.1f}x)")  # fmt: skip
    # the baseline: the rectangular cut lowrank made before the staircase (9d8916b..85028d8), at its budget
    # (10 tol tr / N over the groups, half to each side), on the same hidden factors; alternated rounds
    old_budget = 10.0 * tol * trace / n / len(comp)
    rects = [rectangle_cut(c, old_budget) for c in comp]
    hidden = [
        i for i, f in enumerate(used) if len(f.parts) > 1 or min(f.parts[0].A.shape[1], f.parts[0].D.shape[1]) > 4
    ]
    t_rect = t_stair = float("inf")
    for _ in range(3):
        t_rect = min(t_rect, timed(lambda: [rects[i][0].matmul(V) for i in hidden])[0])
        t_stair = min(t_stair, timed(lambda: [used[i].matmul(V) for i in hidden])[0])
    rect_cols = sum(rects[i][0].feature_dim for i in hidden)
    stair_cols = sum(used[i].feature_dim for i in hidden)
    print(f"  hidden layers, one block product: staircase cut {t_stair * 1e3:.0f} ms ({stair_cols} columns, bound "
          f"{sum(sol.bounds[i] for i in hidden):.4f}) against the earlier rectangular cut {t_rect * 1e3:.0f} ms "
          f"({rect_cols} columns, bound {sum(rects[i][1] for i in hidden):.4f}): {t_stair / t_rect:.2f}x")  # fmt: skip
    import inrdiag.ntk.factors as F

    # the compression's rotations X V (65,536 x p by p x p) in one call against by row blocks (ROWS_MM), and
    # the factors' forward/backward passes by chunks of CHUNK rows against 8192 (before 2026-12-01 night)
    wide_v = torch.linalg.qr(torch.randn(wide.shape[1], wide.shape[1], dtype=wide.dtype))[0]
    one_call = blocks = float("inf")
    for _ in range(3):
        one_call = min(one_call, timed(lambda: wide @ wide_v)[0])
        blocks = min(blocks, timed(lambda: L._rows_mm(wide, wide_v))[0])
    print(f"  rotation of a {n} x {wide.shape[1]} factor: one call {one_call * 1e3:.0f} ms, by blocks of {L.ROWS_MM} "
          f"rows {blocks * 1e3:.0f} ms ({blocks / one_call:.2f}x)")  # fmt: skip
    by_chunk = {F.CHUNK: float("inf"), 8192: float("inf")}
    for _ in range(3):
        for c in by_chunk:
            by_chunk[c] = min(by_chunk[c], timed(lambda c=c: layer_factors(model, x, c))[0])
    print(f"  factors by chunks of {F.CHUNK} rows {by_chunk[F.CHUNK]:.2f} s, of 8192 rows {by_chunk[8192]:.2f} s "
          f"({by_chunk[F.CHUNK] / by_chunk[8192]:.2f}x)")  # fmt: skip
    # one budget shared by every group (lowrank_all, what lanczos_topk runs) against the same budget split
    # evenly over the groups (before 2026-12-01, late night), the whole block product alternated
    stair_budget = 6.0 * tol * trace / n  # lanczos_topk's first budget
    shared = L.lowrank_all(comp, stair_budget)
    even = [f.lowrank(stair_budget / len(comp)) for f in comp]
    t_shared = t_even = float("inf")
    for _ in range(3):
        t_even = min(t_even, timed(lambda: [c.matmul(V) for c in even])[0])
        t_shared = min(t_shared, timed(lambda: [c.matmul(V) for c in shared])[0])
    print(f"  budget {stair_budget:.4f} shared by the groups: one block product {t_shared * 1e3:.0f} ms (columns "
          f"{[c.feature_dim for c in shared]}, bound {sum(c.bound for c in shared):.4f}) against split evenly "
          f"{t_even * 1e3:.0f} ms (columns {[c.feature_dim for c in even]}, bound {sum(c.bound for c in even):.4f}): "
          f"{t_shared / t_even:.2f}x")  # fmt: skip
    # the staircase's row statistics summed in the factor's float32 with the rounding bounded, against float64
    # copies of the row chunks (before 2026-12-01 late night), on the widest factor; alternated
    edges = [*range(0, wide.shape[1], L.CUT_GROUP), wide.shape[1]]
    t32 = t64 = float("inf")
    for _ in range(3):
        t64 = min(t64, timed(lambda: float64_row_stats(wide, edges))[0])
        t32 = min(t32, timed(lambda: (L._tail_row_max(wide), L._group_row_max(wide, edges)))[0])
    ref_tail, ref_group = float64_row_stats(wide, edges)
    ratios = torch.cat([L._tail_row_max(wide) / ref_tail, L._group_row_max(wide, edges) / ref_group])
    print(f"  staircase row statistics of a {n} x {wide.shape[1]} factor: in float32 with the rounding bounded "
          f"{t32 * 1e3:.0f} ms, from float64 copies {t64 * 1e3:.0f} ms ({t32 / t64:.2f}x; the bounds are "
          f"{float(ratios.min()):.7f}x to {float(ratios.max()):.7f}x the float64 sums)")  # fmt: skip
    # the Lanczos basis stored transposed (capacity x N, _BlockKrylov since 2026-12-01 late night) against
    # column slices of an N x capacity matrix (before): Q^T X and Q Y as the solver runs them, m = 80 of 100
    m_used, cap = 80, 100
    Qs = torch.randn(n, cap, dtype=torch.float64)[:, :m_used]
    Qt = torch.randn(cap, n, dtype=torch.float64)[:m_used]
    Xb = torch.randn(n, block, dtype=torch.float64)
    Yk = torch.randn(m_used, k, dtype=torch.float64)
    lay = {"slices": float("inf"), "transposed": float("inf")}
    for _ in range(3):
        lay["slices"] = min(lay["slices"], timed(lambda: (Qs.T @ Xb, Qs @ (Qs.T @ Xb), Qs @ Yk), repeat=5)[0])
        lay["transposed"] = min(
            lay["transposed"], timed(lambda: (Qt @ Xb, (Qt @ Xb).T @ Qt, (Yk.T @ Qt).T.contiguous()), repeat=5)[0]
        )
    print(f"  Lanczos basis ({n} x {m_used} float64): Q^T X, Q (Q^T X) and Q Y from the transposed storage "
          f"{lay['transposed'] * 1e3:.1f} ms, from column slices of an N x {cap} matrix {lay['slices'] * 1e3:.1f} ms "
          f"({lay['transposed'] / lay['slices']:.2f}x)")  # fmt: skip
    # the thin parts' first GEMM split in two halves side by side (THIN_SPLIT) against one call, alternated
    thin = [p for c in used for p in c.parts if 1 < min(p.A.shape[1], p.D.shape[1]) <= F.THIN_SPLIT // block]
    split_default = F.THIN_SPLIT
    t_split = {"split": float("inf"), "one call": float("inf")}
    try:
        for _ in range(5):
            for name, thr in (("one call", 0), ("split", split_default)):
                F.THIN_SPLIT = thr
                t_split[name] = min(t_split[name], timed(lambda: [p.matmul(V) for p in thin])[0])
    finally:
        F.THIN_SPLIT = split_default
    print(f"  thin parts {[(p.A.shape[1], p.D.shape[1]) for p in thin]}, one block product: first GEMM split in two "
          f"{t_split['split'] * 1e3:.1f} ms, one call {t_split['one call'] * 1e3:.1f} ms "
          f"({t_split['split'] / t_split['one call']:.2f}x)")  # fmt: skip
    # the group size of the staircase (CUT_GROUP): smaller groups keep fewer columns but run smaller GEMMs
    default_group, sizes = L.CUT_GROUP, (16, 32, 64)
    cuts_by = {}
    try:
        for g in sizes:
            L.CUT_GROUP = g
            cuts_by[g] = [L.lowrank_all(comp, stair_budget)[i] for i in hidden]
    finally:
        L.CUT_GROUP = default_group
    best = dict.fromkeys(sizes, float("inf"))
    for _ in range(3):
        for g in sizes:
            best[g] = min(best[g], timed(lambda g=g: [c.matmul(V) for c in cuts_by[g]])[0])
    print("  staircase group size, hidden layers' block product: " + ", ".join(
        f"{g} columns {best[g] * 1e3:.0f} ms ({sum(c.feature_dim for c in cuts_by[g])} columns kept)" for g in sizes))  # fmt: skip
    per = [timed(lambda f=f: f.matmul(V), repeat=3)[0] for f in used]
    print(f"  one block product ({block} vectors) per layer: "
          + ", ".join(f"{f.name} {t * 1e3:.1f} ms" for f, t in zip(comp, per)))  # fmt: skip
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


def compiled(tree: Path) -> Path:
    """``tree``, with the bytecode of its ``inrdiag`` written (once per tree and run): an installed package has
    its ``.pyc`` files (pip compiles them), a checkout run with PYTHONDONTWRITEBYTECODE=1 (set on this
    machine) would compile every module in every process (measured: ~0.7 s of CPU per command here)."""
    if tree not in _COMPILED:
        import compileall

        compileall.compile_dir(str(tree / "inrdiag"), quiet=1)
        _COMPILED.add(tree)
    return tree


_COMPILED: set[Path] = set()


def fresh(args: list[str], repeats: int, threads: int | None = None, tree: Path = ROOT) -> dict:
    """Run ``python -m inrdiag ARGS`` (or ``python -c`` when args[0] == "-c") ``repeats`` times, fresh processes,
    with the ``inrdiag`` of the source tree ``tree`` (default: this checkout; its bytecode compiled first, as
    an install has it); ``threads``: INRDIAG_THREADS for the child (None: the thread policy decides, as for
    a user)."""
    compiled(tree)
    cmd = [sys.executable, *(args if args[0] == "-c" else ["-m", "inrdiag", *args])]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if threads is not None:
        env["INRDIAG_THREADS"] = str(threads)
    walls, cpus, sys_s, faults, out = [], [], [], [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        out, use = run_child(cmd, tree, env)
        walls.append(time.perf_counter() - t0)
        cpus.append(use.ru_utime + use.ru_stime)
        sys_s.append(use.ru_stime)
        faults.append(use.ru_minflt + use.ru_majflt)
    return {"best": min(walls), "median": statistics.median(walls), "cpu": min(cpus), "sys": min(sys_s),
            "faults": min(faults), "out": out}  # fmt: skip


def run_child(cmd: list[str], cwd: Path, env: dict) -> tuple[str, resource.struct_rusage]:
    """Run ``cmd`` to its end; its stdout and its own resource usage (``os.wait4``: the CPU time and page faults
    of this child alone; not its ``ru_maxrss``, which starts from this process's RSS at the fork). A failure
    raises, with the child's stderr."""
    import tempfile

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, use = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise subprocess.CalledProcessError(proc.returncode, cmd, out, err.read().decode(errors="replace"))
    return out, use


def line(name: str, r: dict, base: dict | None = None, base_name: str = "", target: str = "") -> None:
    ratio = f"; {r['best'] / base['best']:.2f}x {base_name}" if base else ""
    goal = f"   [target {target}]" if target else ""
    mem = f" (sys {r['sys']:.2f} s), {r['faults'] / 1e3:.0f}k page faults" if "faults" in r else ""
    print(f"{name}: best {r['best']:.2f} s, median {r['median']:.2f} s, CPU {r['cpu']:.2f} s{mem}{ratio}{goal}",
          flush=True)  # fmt: skip


def solver_topk(repeats: int) -> float:
    """The top-32 solver alone at N = 65,536 on the checkpoint, in this process (best of repeats): factors,
    dead-column drop, low-rank block Lanczos with float32 products, as the command runs them."""
    import inrdiag
    from inrdiag.device import resolve_device
    from inrdiag.models.adapter import as_adapter
    from inrdiag.ntk.points import ntk_points

    tune_malloc()
    dev = resolve_device("auto")  # what the command's --device auto picks (CUDA when there is one)
    m = as_adapter(inrdiag.load(CKPT)).copy(dev, torch.float32)
    for p in m.module.parameters():
        p.requires_grad_(True)
    x = ntk_points(2, 256, None, 0, torch.float32, dev).coords
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        comp = [f.compressed(reuse=True) for f in layer_factors(m, x)]
        trace = sum(float(f.diag().double().sum()) for f in comp)
        lanczos_topk(comp, x.shape[0], 32, 1e-3, trace, dev, torch.float32, overwrite=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def old_tree(rev: str) -> Path:
    """The source tree of git revision ``rev`` of this repository, extracted to a temporary folder (removed
    when this script exits)."""
    import atexit
    import shutil
    import tempfile

    dest = Path(tempfile.mkdtemp(prefix="inrdiag-old-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def compare_auto_float64(d: dict, d64: dict) -> None:
    """Print the ``ntk --json`` outputs of ``--dtype auto`` (d) and ``--dtype float64`` (d64) side by side: the
    seconds in each JSON, the eigenvalue difference against the stated error, and every rank."""
    secs = {k: round(v, 2) for k, v in d["seconds"].items()}
    secs64 = {k: round(v, 2) for k, v in d64["seconds"].items()}
    print(f"  seconds in the JSON: {secs} (float64: {secs64})")
    ev, ev64 = d["eigenvalues"], d64["eigenvalues"]
    diff = max(abs(x - y) for x, y in zip(ev, ev64)) / ev64[0]
    lo, hi = d["effective_rank_bounds"] or [d["effective_rank"]] * 2
    print(f"  auto ({d['spectrum']}, {len(ev)} eigenvalues; stated error {d['accuracy'].get('eigenvalue_error', 0):.1e} "
          f"lambda_1) vs float64: max |lambda difference| / lambda_1 = {diff:.1e}; effective rank {d['effective_rank']:.4f} "
          f"in [{lo:.4f}, {hi:.4f}] vs {d64['effective_rank']:.4f}; numerical rank {d['numerical_rank']} vs "
          f"{d64['numerical_rank']}; decay 100 {d['decay']['100']} vs {d64['decay']['100']}")  # fmt: skip
    for g, g64 in zip(d["layers"], d64["layers"]):
        b = g["effective_rank_bounds"]
        bounds = f" in [{b[0]:.4f}, {b[1]:.4f}]" if b else ""
        print(f"  {g['name']}: {g['spectrum']}; effective rank {g['effective_rank']:.4f}{bounds} (float64 "
              f"{g64['effective_rank']:.4f}); numerical rank {g['numerical_rank']} ({g64['numerical_rank']})")  # fmt: skip


def part_commands(repeats: int, threads: int, old_rev: str | None) -> None:
    model = str(CKPT)
    print(f"== whole commands (issue 15), fresh processes, {threads} thread(s), best of {repeats} ==", flush=True)
    imp = fresh(["-c", FLOOR], repeats, threads)
    line("import torch + inrdiag.cli only (floor of any command)", imp)
    before = old_tree(old_rev) if old_rev else None
    auto = fresh(["ntk", model, "--json"], repeats, threads)
    if before is not None:  # the old path: the same command with the code of --old REV, in this run
        prev = fresh(["ntk", model, "--json"], repeats, threads, before)
        line(f"ntk MODEL (N=4096) at {old_rev} (the old path)", prev)
        line("ntk MODEL (N=4096, exact, --dtype auto)", auto, prev, f"the old path ({old_rev})", "<= 5 s")
    old = fresh(["ntk", model, "--json", "--dtype", "float64"], repeats, threads)
    line("ntk MODEL (N=4096, exact, --dtype auto)", auto, old, "the float64 run", "<= 5 s")
    line("ntk MODEL --dtype float64 (all eigenvalues by float64 eigvalsh)", old)
    d, d64 = json.loads(auto["out"]), json.loads(old["out"])
    print(f"  auto - import-only: {auto['best'] - imp['best']:.2f} s")
    compare_auto_float64(d, d64)
    top = fresh(["ntk", model, "--grid", "256", "--top-k", "32", "--json"], repeats, threads)
    if before is not None:
        prev = fresh(["ntk", model, "--grid", "256", "--top-k", "32", "--json"], repeats, threads, before)
        line(f"ntk MODEL --grid 256 --top-k 32 at {old_rev} (the old path)", prev)
        line("ntk MODEL --grid 256 --top-k 32 (N=65536)", top, prev, f"the old path ({old_rev})")
    solver = {"best": solver_topk(repeats)}
    print(f"solver alone in this process (factors + dead-column drop + low-rank Lanczos, float32, best of {repeats}): "
          f"{solver['best']:.2f} s", flush=True)  # fmt: skip
    line("ntk MODEL --grid 256 --top-k 32 (N=65536, --dtype auto)", top, solver, "the solver", "<= 15 s, <= 1.3x")
    d = json.loads(top["out"])
    secs = {k: round(v, 2) for k, v in d["seconds"].items()}
    print(f"  {d['precision']}; {d['accuracy']['products']} products; max relative error bound "
          f"{d['accuracy']['max_relative_error_bound']:.2e}; seconds in the JSON: {secs}; groups refined by their "
          f"own solve: {d['accuracy'].get('groups', {}).get('refined')}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "commands", "exact", "topk"], default="all")
    ap.add_argument("--repeats", type=int, default=3, help="commands: fresh runs per command (best is printed)")
    ap.add_argument("--threads", type=int, default=None, help="threads of the children and of this process")
    ap.add_argument("--old", default=None, metavar="REV",
                    help="commands: also time them with the code of git revision REV (the old path), same run")  # fmt: skip
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--grid-exact", type=int, default=64, help="points per axis for the exact part (64: N = 4096)")
    ap.add_argument("--grid-topk", type=int, default=256, help="points per axis for the top-k part (256: N = 65536)")
    ap.add_argument("--top-k", type=int, default=32)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--skip-baseline", action="store_true", help="skip the slow vmap(jacrev) and eigsh baselines")
    ap.add_argument("--no-lowrank", action="store_true", help="top-k: run the products on the uncompressed factors")
    args = ap.parse_args()
    from inrdiag.threads import choose_threads

    choice = choose_threads(args.threads)
    torch.set_num_threads(choice.threads)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {choice.describe()}, load average {os.getloadavg()[0]:.2f}")
    if args.part in ("all", "commands"):
        part_commands(args.repeats, choice.threads, args.old)
    if args.part in ("all", "exact"):
        part_exact(args.grid_exact, dtype, args.skip_baseline)
    if args.part in ("all", "topk"):
        part_topk(args.grid_topk, args.top_k, args.block, args.tol, dtype, not args.skip_baseline, not args.no_lowrank)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
