"""Empirical NTK of a coordinate MLP and its exact layer-wise decomposition (DESIGN.md section 3).

``Theta(x, x') = sum_c <d f_c(x)/d theta, d f_c(x')/d theta>``: a SUM over the output channels c
(as neural-tangents does by default), not a mean. It splits exactly over parameter groups,
``Theta = sum_g Theta_g`` (see ``ntk_factors``). Two methods:

- ``exact``: every ``Theta_g`` and ``Theta`` as N x N matrices, all eigenvalues by ``eigvalsh``
  (float64). A group whose Khatri-Rao width p is below N gets its spectrum from the p x p Gram.
- ``lanczos``: nothing N x N is formed; the top-k eigenpairs of Theta come from a block Lanczos
  method on the matrix-free product (``ntk_eig``), with the residual of every returned pair as the
  accuracy check. Per group: the trace share is exact (``tr Theta_g = sum_n |a_n|^2 |d_n|^2``), the
  spectrum is exact when p <= ``SMALL_GRAM`` (the inlet of a 2-D net, the head, batch norm), and
  otherwise only the top eigenvalue is computed (ranks are null, with a note).

``auto`` takes ``exact`` when N <= ``EXACT_MAX_POINTS`` and the N x N matrices fit in memory.
Batch norm is evaluated in eval mode (running statistics), which makes samples independent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InrdiagError
from ..grid import check_memory, make_grid
from ..spectra import DEFAULT_TOL, spectrum_stats

METHODS = ("auto", "exact", "lanczos")
DTYPES = ("auto", "float32", "float64")
#: ``auto``: float32 products everywhere (kernels, Lanczos/Krylov products) with float64 bases and
#: float64 p x p Grams; what each solve used and its accuracy check are in ``accuracy``. The default of
#: the ``inrdiag ntk`` command; the library function keeps float64 (the reference) unless asked.
DEFAULT_DTYPE = "auto"
#: Relative width to which the exact-mode ``auto`` pins each large group's effective rank.
EFF_RANK_WIDTH = 0.01
#: ``auto`` stays exact up to this many points: beyond it eigvalsh (O(N^3)) takes minutes.
EXACT_MAX_POINTS = 8192
#: Groups whose Khatri-Rao width p is at most this get exact spectra from the p x p Gram.
SMALL_GRAM = 4096
#: Default points per axis for ``ntk`` (N = 4096 in 1-D, 2-D and 3-D): the exact method's range.
DEFAULT_GRID = {1: 4096, 2: 64, 3: 16}
DEFAULT_TOP_K = 32


@dataclass
class GroupNTK:
    """One parameter group's ``Theta_g`` on the points."""

    index: int
    name: str
    #: "linear" (factorised form) or "generic" (torch.func per-sample Jacobian).
    kind: str
    parameters: int
    trace: float
    trace_share: float
    top_eigenvalue: float | None
    numerical_rank: int | None
    effective_rank: float | None
    #: Largest rank Theta_g can have: min(N, p), p = width of its Khatri-Rao factor.
    max_rank: int
    #: Eigenvalues (descending) when known exactly, else None (the JSON keeps the top ``top_k``).
    eigenvalues: list[float] | None = None
    note: str = ""
    #: How the spectrum was obtained: "all" (every eigenvalue), "krylov" (Ritz values of a block
    #: Krylov space, with the rank bounds below), "top" (top eigenvalue only).
    spectrum: str = "all"
    #: [lower, upper] bounds when the ranks come from a partial spectrum (None when exact).
    effective_rank_bounds: list[float] | None = None
    numerical_rank_bounds: list[int] | None = None

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        ev = self.eigenvalues
        return {
            "index": self.index, "name": self.name, "kind": self.kind, "parameters": self.parameters,
            "trace": self.trace, "trace_share": self.trace_share, "top_eigenvalue": self.top_eigenvalue,
            "numerical_rank": self.numerical_rank, "effective_rank": self.effective_rank,
            "max_rank": self.max_rank, "eigenvalues": None if ev is None else ev[:top_k], "note": self.note,
            "spectrum": self.spectrum, "effective_rank_bounds": self.effective_rank_bounds,
            "numerical_rank_bounds": self.numerical_rank_bounds,
        }  # fmt: skip


@dataclass
class NTKReport:
    """Spectrum of the full NTK on the points and its per-group decomposition."""

    grid_shape: list[int]
    points: int
    #: True when the points are a seeded random subset of the grid (``--points``).
    subset: bool
    seed: int
    method: str
    #: The precision used (float32 or float64); ``dtype_requested`` is what was asked ("auto" by default).
    dtype: str
    device: str
    top_k: int
    tol: float
    #: Eigenvalues of Theta, descending: all N (exact) or the top k (lanczos).
    eigenvalues: list[float]
    trace: float
    #: lambda_k / lambda_1 for k = 10, 100 (None when not computed).
    decay: dict[str, float | None]
    effective_rank: float | None
    numerical_rank: int | None
    #: lambda_1 / lambda_k of the top-k block.
    condition_number_top_k: float | None
    groups: list[GroupNTK]
    accuracy: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Top-k eigenvectors (N x k tensor) when asked for (targets); not serialised.
    vectors: Any = None
    #: The points (N x d tensor) the kernel was evaluated on; not serialised.
    coords: Any = None
    #: Row indices of the points in the full grid (``make_grid(grid_shape)``); not serialised.
    indices: Any = None
    dtype_requested: str = "float64"
    #: One line: which precision each step ran in (also printed).
    precision: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": {"shape": self.grid_shape, "points": self.points, "subset": self.subset, "seed": self.seed},
            "points": self.points, "method": self.method, "dtype": self.dtype,
            "dtype_requested": self.dtype_requested, "precision": self.precision, "device": self.device,
            "top_k": self.top_k, "tol": self.tol, "kernel": "sum over output channels of J_c J_c^T",
            "eigenvalues": self.eigenvalues, "trace": self.trace, "decay": self.decay,
            "effective_rank": self.effective_rank, "numerical_rank": self.numerical_rank,
            "condition_number_top_k": self.condition_number_top_k,
            "layers": [g.to_dict(self.top_k) for g in self.groups],
            "accuracy": self.accuracy, "seconds": self.seconds, "notes": self.notes,
        }  # fmt: skip


def ntk_points(dim: int, grid: int | None, points: int | None, seed: int = 0, dtype=None, device=None):
    """(grid shape, N x d coordinates, row indices into the grid or None) for ``--grid``/``--points``."""
    import torch

    n = DEFAULT_GRID.get(dim, 8) if grid is None else int(grid)
    if n < 2:
        raise InrdiagError(f"--grid must be at least 2 points per axis, got {n}")
    shape = (n,) * dim
    total = math.prod(shape)
    check_memory(8.0 * total * dim * 2, f"a {'x'.join(map(str, shape))} grid", "--grid")
    x = make_grid(shape, dtype=dtype, device=device)
    if points is None:
        return shape, x, None
    if not 1 <= points <= total:
        raise InrdiagError(f"--points must be in 1..{total} (the {'x'.join(map(str, shape))} grid), got {points}")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(total, generator=gen)[:points].sort().values
    return shape, x[idx.to(x.device)], idx


def _factor_bytes(ad, n: int, itemsize: int) -> float:
    """Bytes of the factors on n points: per exact-factor layer (d_in + 1) + C d_out columns, per generic
    group C p columns (p real parameters), times 2 for the forward/backward graph of one chunk (a bound)."""
    from .factors import generic_groups

    C = ad.out_features
    cols = sum(ad.layers[k].in_features + 1 + C * ad.layers[k].out_features for k in ad.exact_layers)
    params = dict(ad.module.named_parameters())
    for grp in generic_groups(ad):
        cols += C * sum(params[p].numel() * (2 if params[p].is_complex() else 1) for p in grp.params)
    return float(n) * cols * itemsize * 2


def choose_method(method: str, n: int, ad, itemsize: int) -> str:
    """``method``, or for ``auto``: exact when N <= EXACT_MAX_POINTS and the N x N matrices fit in a
    quarter of the memory; ``ad`` is the model's ``ModuleAdapter``."""
    if method not in METHODS:
        raise InrdiagError(f"unknown --method {method!r}; allowed: {', '.join(METHODS)}")
    if method != "auto":
        return method
    from ..grid import available_memory

    exact_bytes = _factor_bytes(ad, n, itemsize) + 4.0 * n * n * 8
    return "exact" if n <= EXACT_MAX_POINTS and exact_bytes <= available_memory() / 4 else "lanczos"


def _group_from_eigs(f, eigs, n: int, trace: float, total: float, tol: float) -> GroupNTK:
    st = spectrum_stats(eigs, min(n, f.feature_dim), tol)
    return GroupNTK(f.index, f.name, f.kind, f.parameters, trace, trace / total if total > 0 else 0.0,
                    st.singular_values[0] if st.singular_values else 0.0, st.numerical_rank, st.effective_rank,
                    min(n, f.feature_dim), st.singular_values, f.note)  # fmt: skip


def _clean(w) -> list[float]:
    """Descending eigenvalues with those below the float64 rounding floor ``N eps lambda_1`` set to 0."""
    w = w.flip(0)
    floor = w.shape[0] * 2.2e-16 * float(w[0].clamp_min(0)) if w.numel() else 0.0
    return w.masked_fill(w <= floor, 0.0).tolist()


def _group_from_partial(f, ps, n: int, trace: float, total: float) -> GroupNTK:
    lo, hi = ps.numerical_rank_bounds
    return GroupNTK(f.index, f.name, f.kind, f.parameters, trace, trace / total if total > 0 else 0.0,
                    ps.values[0] if ps.values else 0.0, lo if lo == hi else None, ps.effective_rank,
                    min(n, f.feature_dim), ps.values, f.note, spectrum="krylov",
                    effective_rank_bounds=list(ps.effective_rank_bounds),
                    numerical_rank_bounds=[lo, hi])  # fmt: skip


def _eigvalsh_desc(M) -> list[float]:
    import torch

    return _clean(torch.linalg.eigvalsh(M.to(torch.float64)))


def ntk_report(
    model,
    grid: int | None = None,
    points: int | None = None,
    seed: int = 0,
    top_k: int = DEFAULT_TOP_K,
    method: str = "auto",
    dtype: str = "float64",
    device: str = "auto",
    tol: float = DEFAULT_TOL,
    layer_names: list[str] | None = None,
    vectors: bool = False,
    block: int = 4,
    eig_tol: float | None = None,
    lowrank: bool = True,
    in_features: int | None = None,
) -> NTKReport:
    """The empirical NTK of ``model`` on a coordinate grid (or a seeded random subset of it).

    ``model``: a CoordMLP, any ``nn.Module`` mapping (N, d) coordinates to (N, C), an ``inrdiag.Loaded``
    or a ``ModuleAdapter``; ``in_features`` is d when the module cannot tell (see ``inrdiag.models.adapter``).
    Every ``nn.Parameter`` counts (``requires_grad`` is ignored: register constants as buffers).

    ``top_k`` eigenpairs are computed (all eigenvalues in exact mode); ``vectors=True`` keeps the
    top-k eigenvectors (N x k) on the report for target alignment. ``eig_tol`` is the Lanczos
    stopping tolerance on ``||Theta u - theta u|| / theta`` (default 1e-8 in float64, 1e-3 in float32: float32 products leave a residual floor near 1e-4).

    ``dtype="auto"`` (the command's default) is chosen for speed with a checked accuracy: float32 products and
    float64 bases. Exact mode: float32 kernels, all eigenvalues of Theta by float64 ``eigvalsh``, and
    for groups whose Khatri-Rao width p is
    at least N the ranks from a block Krylov space, with effective-rank bounds pinned to 1% (a full
    float32 eigensolve of each would cost 4-5x as much). Lanczos mode: float32 products with a float64
    basis, solved again in float64 if the residuals stall above the tolerance. ``"float64"`` keeps
    every product and every eigensolve in float64 (the reference); ``"float32"`` runs the products
    in float32 and every eigensolve in float64.
    ``lowrank`` lets the Lanczos products run on factors compressed to the directions that matter,
    with a proven spectral-norm bound kept below ``eig_tol`` times the smallest returned eigenvalue
    (``Factor.lowrank``); the bound is reported in ``accuracy``.
    """
    import torch

    from ..device import resolve_device
    from ..models.adapter import as_adapter
    from .eigen import krylov_spectrum, topk_eigh
    from .factors import Factor, all_factors, generic_groups

    if dtype not in DTYPES:
        raise InrdiagError(f"unknown --dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if not 0 < tol < 1:
        raise InrdiagError(f"--tol must be in (0, 1), got {tol}")
    ad = as_adapter(model, in_features=in_features, names=layer_names)
    spec = ad.spec
    auto = dtype == "auto"
    prec = "float32" if auto else dtype
    tdtype = getattr(torch, prec)
    itemsize = 8 if prec == "float64" else 4
    dev = resolve_device(device)
    shape, x, idx = ntk_points(ad.in_features, grid, points, seed, tdtype, dev)
    n = x.shape[0]
    if top_k < 1 or top_k > n:
        raise InrdiagError(f"--top-k must be in 1..{n} (the number of points), got {top_k}; "
                           "lower --top-k or use more --points/--grid")  # fmt: skip
    meth = choose_method(method, n, ad, itemsize)
    need = _factor_bytes(ad, n, itemsize)
    if meth == "exact":
        need += 4.0 * n * n * 8
    else:
        need += 2.0 * n * max(3 * top_k, top_k + 6 * block) * 8 + 8.0 * (1 << 22) * itemsize
    check_memory(need, f"the {meth} NTK on {n:,} points", "--points/--grid (or --method lanczos)")
    m = ad.copy(dev, tdtype)
    for p in m.module.parameters():
        p.requires_grad_(True)
    notes = ["Theta = sum over output channels c of J_c J_c^T (a sum, not a mean)"]
    if spec is not None:
        if spec.batchnorm:
            notes.append("batch norm evaluated in eval mode (running statistics), so samples are independent")
        if spec.encoding == "fourier":
            notes.append("the Fourier matrix B is a fixed buffer, not a trained parameter: it has no NTK term")
    else:
        notes += _module_notes(m, generic_groups(m))
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    factors = all_factors(m, x)
    seconds["factors"] = time.perf_counter() - t0
    traces = [float(f.diag().to(torch.float64).sum()) for f in factors]
    total = sum(traces)
    groups: list[GroupNTK] = []
    vecs = None
    t0 = time.perf_counter()
    if meth == "exact":
        theta = None
        scratch = torch.empty(n, n, dtype=x.dtype, device=x.device) if n > 1 else None
        partial = []
        for f, tr in zip(factors, traces):
            K = f.compressed().kernel(scratch=scratch)  # exactly-zero (dead-unit) columns dropped: exact
            if f.feature_dim < n:
                groups.append(_group_from_eigs(f, _eigvalsh_desc(f.khatri_rao_gram()), n, tr, total, tol))
            elif auto:
                ps = krylov_spectrum(K.matmul, n, tr, tol=tol, width=EFF_RANK_WIDTH, device=dev,
                                     compute_dtype=tdtype, seed=seed)  # fmt: skip
                groups.append(_group_from_partial(f, ps, n, tr, total))
                partial.append((f.name, ps.dim))
            else:
                groups.append(_group_from_eigs(f, _eigvalsh_desc(K), n, tr, total, tol))
            theta = K if theta is None else theta.add_(K)
            del K
        del scratch
        seconds["kernels"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if not bool(torch.isfinite(theta).all()):
            raise InrdiagError("the NTK is not finite (NaN/Inf); check the weights")
        # Theta's eigenvalues: float64 eigvalsh in every precision. A float32 eigvalsh plus a Lanczos check
        # of its top-k measured 10.5 s against 3.1 s for the float64 eigvalsh (4x256 example, N = 4096,
        # MKL with two threads), so float32 buys nothing here.
        if vectors:
            T64 = theta.to(torch.float64)
            del theta
            w, U = torch.linalg.eigh(T64)
            eig_all = _clean(w)
            vecs = U.flip(1)  # all N: the target prediction then has nothing outside the basis
            solver = "eigh (LAPACK, float64)"
            bound = "backward stable: |error| <= ~N * 1.1e-16 * lambda_1"
        else:
            T64 = theta.to(torch.float64)
            del theta
            eig_all = _clean(torch.linalg.eigvalsh(T64))
            solver = "eigvalsh (LAPACK, float64)"
            bound = "backward stable: |error| <= ~N * 1.1e-16 * lambda_1"
        seconds["eigen"] = time.perf_counter() - t0
        eigs = eig_all
        st = spectrum_stats(eigs, n, tol)
        eff, nrank = st.effective_rank, st.numerical_rank
        accuracy: dict[str, Any] = {"solver": solver, "bound": bound}
        if prec == "float32":
            accuracy["kernels"] = ("float32 GEMMs: on the 4x256 example every eigenvalue of Theta is within 7.9e-8 "
                                   "lambda_1 of the float64 kernels' (tests: within 1e-5 lambda_1)")  # fmt: skip
        if partial:
            accuracy["groups"] = {
                "solver": "block Krylov (float64 basis, float32 products), one Rayleigh-Ritz",
                "bound": ("effective rank within effective_rank_bounds: upper bound unconditional (Cauchy "
                          "interlacing + exact trace), lower bound and numerical_rank_bounds from the residual "
                          "intervals, assuming no eigenvalue was missed (random start block)"),
                "width": EFF_RANK_WIDTH, "krylov_dims": {name: d for name, d in partial},
            }  # fmt: skip
            notes.append(f"{', '.join(nm for nm, _ in partial)}: ranks from the top of the spectrum (block Krylov), "
                         "effective rank within the bounds in the JSON (width <= "
                         f"{EFF_RANK_WIDTH:.0%}); --dtype float64 computes every eigenvalue")  # fmt: skip
        precision = ("float32 kernels; " + solver + " for Theta" + ("" if not partial else
                     "; float64-basis block Krylov (float32 products) for the large groups") +
                     "; float64 Grams for p < N")  # fmt: skip
        if not auto:
            precision = f"{prec} kernels; {solver} for Theta and every group"
    else:
        comp = [f.compressed() for f in factors]
        etol = eig_tol if eig_tol is not None else (1e-8 if prec == "float64" else 1e-3)
        res, bound, used, bounds = lanczos_topk(comp, n, top_k, etol, total, dev, tdtype, block, seed, lowrank)
        if auto and not res.converged:
            notes.append(f"float32 products stalled above tol {etol:g} after {res.products} products: "
                         "solved again with float64 products")  # fmt: skip
            prec, tdtype = "float64", torch.float64
            comp = [Factor(f.index, f.name, f.kind, f.A.double(), f.D.double(), f.parameters, f.note) for f in comp]
            res, bound, used, bounds = lanczos_topk(comp, n, top_k, etol, total, dev, tdtype, block, seed, lowrank)
        seconds["eigen"] = time.perf_counter() - t0
        eigs = res.values.clamp_min(0).tolist()
        vecs = res.vectors if vectors else None
        worst = max(r + bound / max(v, 1e-300) for r, v in zip(res.relative_residuals, eigs)) if eigs else 0.0
        accuracy = {"solver": f"block Lanczos (block {block}, {prec} products, float64 basis)", **res.to_dict(),
                    "compression_bound": bound, "max_relative_error_bound": worst,
                    "bound": "||Theta u - theta u|| / theta <= relative_residual + compression_bound / theta for "
                             "every returned pair; each eigenvalue moves by at most compression_bound (Weyl)"}  # fmt: skip
        if not res.converged:
            notes.append(f"Lanczos stopped after {res.products} products before reaching tol {etol:g}; "
                         "see accuracy.relative_residuals")  # fmt: skip
        eff = None
        nrank = sum(1 for v in eigs if v > tol * eigs[0]) if eigs[-1] <= tol * eigs[0] else None
        t0 = time.perf_counter()
        partial = []
        for f, c, u, b, tr in zip(factors, comp, used, bounds, traces):
            if c.feature_dim <= SMALL_GRAM:
                ev = _eigvalsh_desc(c.khatri_rao_gram())
                g = _group_from_eigs(f, ev, n, tr, total, tol)
            else:
                # top eigenvalue of the low-rank factor's kernel: within its bound b of Theta_g's (Weyl)
                r1 = topk_eigh(u.matmul, n, 1, dtype=torch.float64, device=dev, compute_dtype=tdtype, block=2,
                               tol=max(etol, 1e-6), seed=seed)  # fmt: skip
                g = GroupNTK(f.index, f.name, f.kind, f.parameters, tr, tr / total if total > 0 else 0.0,
                             float(r1.values[0]), None, None, min(n, f.feature_dim), spectrum="top",
                             note=f"top eigenvalue of the low-rank factor's kernel, within {b:.3g} (compression "
                                  "bound) plus its Lanczos residual; ranks need all N eigenvalues: use --method "
                                  "exact with fewer --points")  # fmt: skip
                partial.append(f.name)
            groups.append(g)
        seconds["groups"] = time.perf_counter() - t0
        notes.append("effective rank of Theta needs all eigenvalues: null in lanczos mode")
        if partial:
            notes.append(f"lanczos mode: ranks of {', '.join(partial)} not computed (their Khatri-Rao width "
                         f"exceeds {SMALL_GRAM}); trace shares are exact, top eigenvalues within the compression "
                         "bound plus the Lanczos residual")  # fmt: skip
        precision = f"{prec} products with a float64 Lanczos basis; float64 Grams for p <= {SMALL_GRAM}"
    lam1 = eigs[0] if eigs else 0.0
    decay = {str(k): (eigs[k - 1] / lam1 if lam1 > 0 and len(eigs) >= k else None) for k in (10, 100)}
    kk = min(top_k, len(eigs))
    cond = lam1 / eigs[kk - 1] if kk and eigs[kk - 1] > 0 else math.inf
    if auto:
        notes.append(f"precision (--dtype auto): {precision}")
    return NTKReport(
        grid_shape=list(shape), points=n, subset=idx is not None, seed=seed, method=meth, dtype=prec,
        device=str(dev), top_k=top_k, tol=tol, eigenvalues=eigs, trace=total, decay=decay, effective_rank=eff,
        numerical_rank=nrank, condition_number_top_k=cond, groups=groups, accuracy=accuracy, seconds=seconds,
        notes=notes, vectors=vecs, coords=x, indices=idx, dtype_requested=dtype, precision=precision,
    )  # fmt: skip


def _module_notes(ad, groups) -> list[str]:
    """What the NTK of a module inrdiag did not build rests on: the exact and generic groups, and why."""
    import torch

    notes = [f"{ad.kind} is not an inrdiag CoordMLP: linear layers found by forward hooks; exact factor form "
             f"for {len(ad.exact_layers)} of {len(ad.layers)} linear layers"]  # fmt: skip
    if groups:
        notes.append("generic torch.func path (per-sample Jacobians): "
                     + "; ".join(f"{g.name} ({g.reason})" for g in groups))  # fmt: skip
    bn = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
    if any(isinstance(mod, bn) for mod in ad.module.modules()):
        notes.append("batch norm evaluated in eval mode (running statistics), so samples are independent")
    bufs = [k for k, b in ad.module.named_buffers() if b.is_floating_point() or b.is_complex()]
    if bufs:
        shown = ", ".join(bufs[:6]) + (" ..." if len(bufs) > 6 else "")
        notes.append(f"buffers are constants with no NTK term: {shown}")
    return notes + [n for n in ad.structure_notes() if "no representation" not in n]


def lanczos_topk(comp, n, top_k, etol, trace, dev, tdtype, block=4, seed=0, lowrank=True):
    """Top-k pairs of ``sum_g Theta_g``, the compression bound incurred (0 without ``lowrank``), the
    factors the products ran on, and each factor's own bound (they sum to the bound).

    The compression budget starts at ``10 etol tr(Theta) / N``; if the bound then exceeds half of
    ``etol`` times the smallest eigenvalue found, the factors are recompressed with a budget of a
    quarter of that and the problem solved again, so the bound's share of the stated error is at
    most ``etol / 2`` of each eigenvalue.
    """
    import torch

    from .eigen import topk_eigh
    from .factors import matmul_sum

    def solve(factors):
        return topk_eigh(lambda V: matmul_sum(factors, V), n, top_k, dtype=torch.float64, device=dev,
                         compute_dtype=tdtype, block=block, tol=etol, seed=seed)  # fmt: skip

    zeros = [0.0] * len(comp)
    if not lowrank or trace <= 0:
        return solve(comp), 0.0, comp, zeros
    budget = 10.0 * etol * trace / n
    for _ in range(3):
        pairs = [f.lowrank(budget / len(comp)) for f in comp]
        bound = sum(b for _, b in pairs)
        res = solve([f for f, _ in pairs])
        smallest = float(res.values[-1]) if res.values.numel() else 0.0
        if bound <= 0.5 * etol * smallest:
            return res, bound, [f for f, _ in pairs], [b for _, b in pairs]
        budget = 0.25 * etol * smallest
        if budget <= 0:
            break
    return solve(comp), 0.0, comp, zeros
