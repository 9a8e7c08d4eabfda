"""Empirical NTK of a coordinate MLP and its exact layer-wise decomposition (DESIGN.md section 3).

``Theta(x, x') = sum_c <d f_c(x)/d theta, d f_c(x')/d theta>``: a SUM over the output channels c
(as neural-tangents does by default), not a mean. It splits exactly over parameter groups,
``Theta = sum_g Theta_g`` (see ``inrdiag.ntk.factors``). Two methods:

- ``exact``: every ``Theta_g`` and ``Theta`` as N x N matrices. A group whose Khatri-Rao width p is below
  N (and at most ``SMALL_GRAM``) gets all its eigenvalues from the p x p Gram of its factor. The other
  spectra: with ``dtype="float64"``/``"float32"`` every eigenvalue by float64 ``eigvalsh``; with
  ``"auto"`` (the command's default) the top of each spectrum from a block Krylov space on the float32
  matrix, grown until the ranks are pinned (``inrdiag.ntk.eigen.krylov_spectrum``; the bounds and the
  eigenvalue error are reported).
- ``lanczos``: nothing N x N is formed; the top-k eigenpairs of Theta come from a block Lanczos
  method on the matrix-free product (``inrdiag.ntk.eigen.topk_eigh``), with the residual of every
  returned pair as the accuracy check. Per group: the trace share is exact
  (``tr Theta_g = sum_n |a_n|^2 |d_n|^2``), the spectrum is exact when p <= ``SMALL_GRAM`` (the inlet of
  a 2-D net, the head, batch norm), and otherwise only the top eigenvalue is computed (ranks are null,
  with a note): the Rayleigh-Ritz value of that group on the Lanczos basis of Theta, refined by its own
  Lanczos solve only if its residual is above the tolerance.

``auto`` takes ``exact`` when N <= ``EXACT_MAX_POINTS`` and the N x N matrices fit in memory.
Batch norm is evaluated in eval mode (running statistics), which makes samples independent.

``ntk_report(model, NTKConfig(...))`` is the one entry point (the ``inrdiag ntk`` command builds the same
config from its flags; ``inrdiag.ntk.analysis.run_ntk`` adds a target).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..device import resolve_device
from ..errors import InrdiagError
from ..grid import available_memory, check_memory
from ..models.adapter import ModuleAdapter, as_adapter
from ..spectra import spectrum_stats
from .config import (
    DECAY_AT,
    DEFAULT_BLOCK,
    DEFAULT_DTYPE,
    DEFAULT_GRID,
    DEFAULT_TOP_K,
    DTYPES,
    EFF_RANK_WIDTH,
    EIG_TOL,
    EXACT_MAX_POINTS,
    KRYLOV_DIM,
    KRYLOV_FLOOR,
    KRYLOV_MIN_POINTS,
    LIBRARY_DTYPE,
    METHODS,
    SMALL_GRAM,
    NTKConfig,
    make_config,
)
from .dense import dense_eigvalsh
from .eigen import PartialSpectrum, krylov_spectrum, topk_eigh
from .factors import Factor, GenericGroup, generic_groups, layer_factors
from .lowrank import LanczosResult, lanczos_topk
from .points import NTKPoints, grid_points, ntk_points

__all__ = [
    "DEFAULT_BLOCK", "DEFAULT_DTYPE", "DEFAULT_GRID", "DEFAULT_TOP_K", "DTYPES", "EXACT_MAX_POINTS", "LIBRARY_DTYPE",
    "METHODS", "SMALL_GRAM", "GroupNTK", "LanczosResult", "NTKConfig", "NTKPoints", "NTKReport", "choose_method",
    "grid_points", "lanczos_topk", "make_config", "ntk_points", "ntk_report",
]  # fmt: skip


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
    #: Eigenvalues (descending): all of them ("all"), the converged Ritz values ("krylov"), or None
    #: ("top"); the JSON keeps the top ``top_k``.
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
    #: Eigenvalues of Theta, descending: all N ("all"), the converged Ritz values ("krylov", at least the
    #: top max(top_k, 100)) or the top k (lanczos).
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
    vectors: Tensor | None = None
    #: The points (N x d tensor) the kernel was evaluated on; not serialised.
    coords: Tensor | None = None
    #: Row indices of the points in the full grid (``make_grid(grid_shape)``); not serialised.
    indices: Tensor | None = None
    dtype_requested: str = LIBRARY_DTYPE
    #: One line: which precision each step ran in (also printed).
    precision: str = ""
    #: How Theta's spectrum was obtained: "all", "krylov" (with the bounds below) or "top" (lanczos).
    spectrum: str = "all"
    effective_rank_bounds: list[float] | None = None
    numerical_rank_bounds: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": {"shape": self.grid_shape, "points": self.points, "subset": self.subset, "seed": self.seed},
            "points": self.points, "method": self.method, "dtype": self.dtype,
            "dtype_requested": self.dtype_requested, "precision": self.precision, "device": self.device,
            "top_k": self.top_k, "tol": self.tol, "kernel": "sum over output channels of J_c J_c^T",
            "spectrum": self.spectrum, "eigenvalues": self.eigenvalues, "trace": self.trace, "decay": self.decay,
            "effective_rank": self.effective_rank, "effective_rank_bounds": self.effective_rank_bounds,
            "numerical_rank": self.numerical_rank, "numerical_rank_bounds": self.numerical_rank_bounds,
            "condition_number_top_k": self.condition_number_top_k,
            "layers": [g.to_dict(self.top_k) for g in self.groups],
            "accuracy": self.accuracy, "seconds": self.seconds, "notes": self.notes,
        }  # fmt: skip


def _factor_bytes(ad: ModuleAdapter, n: int, itemsize: int) -> float:
    """Bytes of the factors on n points: per exact-factor layer (d_in + 1) + C d_out columns, per generic
    group C p columns (p real parameters), times 2 for the forward/backward graph of one chunk (a bound)."""
    C = ad.out_features
    cols = sum(ad.layers[k].in_features + 1 + C * ad.layers[k].out_features for k in ad.exact_layers)
    params = dict(ad.module.named_parameters())
    for grp in generic_groups(ad):
        cols += C * sum(params[p].numel() * (2 if params[p].is_complex() else 1) for p in grp.params)
    return float(n) * cols * itemsize * 2


def choose_method(method: str, n: int, ad: ModuleAdapter, itemsize: int) -> str:
    """``method``, or for ``auto``: exact when N <= EXACT_MAX_POINTS and the N x N matrices fit in a
    quarter of the memory; ``ad`` is the model's ``ModuleAdapter``."""
    if method not in METHODS:
        raise InrdiagError(f"unknown --method {method!r}; allowed: {', '.join(METHODS)}")
    if method != "auto":
        return method
    exact_bytes = _factor_bytes(ad, n, itemsize) + 4.0 * n * n * 8
    return "exact" if n <= EXACT_MAX_POINTS and exact_bytes <= available_memory() / 4 else "lanczos"


def _share(trace: float, total: float) -> float:
    return trace / total if total > 0 else 0.0


def _group_from_eigs(f: Factor, eigs: list[float], n: int, trace: float, total: float, tol: float) -> GroupNTK:
    eigs = eigs[: min(n, f.feature_dim)]  # a p x p Gram with p > N: the rest are zeros (rank <= N)
    st = spectrum_stats(eigs, min(n, f.feature_dim), tol)
    return GroupNTK(index=f.index, name=f.name, kind=f.kind, parameters=f.parameters, trace=trace,
                    trace_share=_share(trace, total),
                    top_eigenvalue=st.singular_values[0] if st.singular_values else 0.0,
                    numerical_rank=st.numerical_rank, effective_rank=st.effective_rank,
                    max_rank=min(n, f.feature_dim), eigenvalues=st.singular_values, note=f.note)  # fmt: skip


def _group_from_partial(f: Factor, ps: PartialSpectrum, n: int, trace: float, total: float) -> GroupNTK:
    nr = ps.numerical_rank_bounds
    vals = ps.converged_values
    return GroupNTK(index=f.index, name=f.name, kind=f.kind, parameters=f.parameters, trace=trace,
                    trace_share=_share(trace, total), top_eigenvalue=vals[0] if vals else 0.0,
                    numerical_rank=nr.lower if nr.pinned else None, effective_rank=ps.effective_rank,
                    max_rank=min(n, f.feature_dim), eigenvalues=vals, note=f.note, spectrum="krylov",
                    effective_rank_bounds=ps.effective_rank_bounds.to_list(),
                    numerical_rank_bounds=nr.to_list())  # fmt: skip


def _clean(w: Tensor) -> list[float]:
    """Descending eigenvalues with those below the float64 rounding floor ``N eps lambda_1`` set to 0."""
    w = w.flip(0)
    floor = w.shape[0] * 2.2e-16 * float(w[0].clamp_min(0)) if w.numel() else 0.0
    return w.masked_fill(w <= floor, 0.0).tolist()


def _eigvalsh_desc(M: Tensor) -> list[float]:
    return _clean(dense_eigvalsh(M.to(torch.float64)))


@dataclass
class _Solved:
    """What a method found, before it becomes an NTKReport."""

    eigenvalues: list[float]
    effective_rank: float | None
    numerical_rank: int | None
    groups: list[GroupNTK]
    accuracy: dict[str, Any]
    precision: str
    dtype: str
    spectrum: str = "all"
    effective_rank_bounds: list[float] | None = None
    numerical_rank_bounds: list[int] | None = None
    vectors: Tensor | None = None
    notes: list[str] = field(default_factory=list)


def _krylov(K: Tensor, n: int, trace: float, tol: float, seed: int, min_converged: int) -> PartialSpectrum:
    """The ``auto`` Krylov spectrum of an N x N float32 matrix (float64 basis); eigenvalues below
    ``KRYLOV_FLOOR * lambda_1`` (float32's resolution) need not converge."""
    return krylov_spectrum(K.matmul, n, trace, tol=tol, width=EFF_RANK_WIDTH, dim=min(KRYLOV_DIM, n),
                           max_dim=max(min(KRYLOV_DIM, n), n // 4), min_converged=min_converged,
                           floor=KRYLOV_FLOOR, device=K.device, compute_dtype=K.dtype, seed=seed)  # fmt: skip


def _exact(factors: list[Factor], traces: list[float], cfg: NTKConfig, n: int, prec: str,
           seconds: dict[str, float]) -> _Solved:  # fmt: skip
    """Every Theta_g and Theta as N x N matrices; spectra by Gram, Krylov (``auto``) or eigvalsh."""
    auto = cfg.dtype == "auto"
    krylov_ok = auto and n > KRYLOV_MIN_POINTS
    tol, total = cfg.tol, sum(traces)
    t0 = time.perf_counter()
    theta: Tensor | None = None
    groups: list[GroupNTK] = []
    krylov: dict[str, int] = {}
    fallback: list[str] = []
    for f, tr in zip(factors, traces):
        c = f.compressed(reuse=True)  # dead-unit columns dropped in place (f: metadata only from here)
        K = c.kernel()
        if f.feature_dim < n and (not auto or f.feature_dim <= SMALL_GRAM):
            groups.append(_group_from_eigs(f, _eigvalsh_desc(c.khatri_rao_gram()), n, tr, total, tol))
        elif krylov_ok:
            gps = _krylov(K, n, tr, tol, cfg.seed, min(n, cfg.top_k))
            if gps.converged:
                groups.append(_group_from_partial(f, gps, n, tr, total))
                krylov[f.name] = gps.dim
            else:
                groups.append(_group_from_eigs(f, _eigvalsh_desc(K), n, tr, total, tol))
                fallback.append(f.name)
        else:
            groups.append(_group_from_eigs(f, _eigvalsh_desc(K), n, tr, total, tol))
        theta = K if theta is None else theta.add_(K)
        del K
    seconds["kernels"] = time.perf_counter() - t0
    assert theta is not None
    t0 = time.perf_counter()
    want = min(n, max(cfg.top_k, DECAY_AT[-1]))
    ps: PartialSpectrum | None = None
    if krylov_ok and not cfg.vectors:
        ps = _krylov(theta, n, total, tol, cfg.seed, want)
        if not ps.converged:
            fallback.append("Theta")
            ps = None
    notes: list[str] = []
    accuracy: dict[str, Any]
    vecs = None
    if ps is not None:
        eigs = ps.converged_values
        lam1 = eigs[0] if eigs else 0.0
        err = max(ps.radii) / lam1 if lam1 > 0 else 0.0
        kk = min(cfg.top_k, len(eigs))
        rel = max((r / v for r, v in zip(ps.radii[:kk], eigs[:kk]) if v > 0), default=0.0)
        solved = _Solved(eigenvalues=eigs, effective_rank=ps.effective_rank,
                         numerical_rank=ps.numerical_rank_bounds.lower, groups=groups, accuracy={}, precision="",
                         dtype=prec, spectrum="krylov", effective_rank_bounds=ps.effective_rank_bounds.to_list(),
                         numerical_rank_bounds=ps.numerical_rank_bounds.to_list())  # fmt: skip
        accuracy = {
            "solver": "block Krylov (float64 basis, float32 products), one Rayleigh-Ritz",
            "bound": (f"the {len(eigs)} converged eigenvalues reported: lambda_i in [theta_i, theta_i + ||r_i||], "
                      f"||r_i|| <= {err:.1e} lambda_1 ({rel:.1e} of the value for the top {kk}); effective rank "
                      "within effective_rank_bounds (upper bound unconditional: interlacing and the exact trace; "
                      "lower bound and the numerical rank assume the random start block missed no eigenvalue)"),
            "eigenvalue_error": err, "relative_error_top_k": rel, "krylov_dim": ps.dim, "products": ps.products,
            "converged_eigenvalues": len(eigs), "width": EFF_RANK_WIDTH,
        }  # fmt: skip
        solver = "block Krylov (float64 basis, float32 products)"
        if len(eigs) < want:
            notes.append(f"Theta: the eigenvalues past the {len(eigs)}th are below {KRYLOV_FLOOR:g} lambda_1, the "
                         "resolution of float32 kernels: not reported (decay null past them); --dtype float64 "
                         "computes them")  # fmt: skip
        notes.append(f"Theta: top {len(eigs)} eigenvalues from a block Krylov space (dim {ps.dim}), each within "
                     f"{err:.1e} lambda_1; effective rank within the bounds in the JSON (width <= "
                     f"{EFF_RANK_WIDTH:.0%}); --dtype float64 computes all {n} eigenvalues")  # fmt: skip
    else:
        T64 = theta.to(torch.float64)
        del theta
        if cfg.vectors:
            w, U = torch.linalg.eigh(T64)
            eigs = _clean(w)
            vecs = U.flip(1)  # all N: the target prediction then has nothing outside the basis
            solver = "eigh (LAPACK, float64)"
        else:
            eigs = _eigvalsh_desc(T64)
            solver = "eigvalsh (LAPACK, float64)"
        st = spectrum_stats(eigs, n, tol)
        solved = _Solved(eigenvalues=eigs, effective_rank=st.effective_rank, numerical_rank=st.numerical_rank,
                         groups=groups, accuracy={}, precision="", dtype=prec, vectors=vecs)  # fmt: skip
        accuracy = {"solver": solver, "bound": "backward stable: |error| <= ~N * 1.1e-16 * lambda_1"}
    seconds["eigen"] = time.perf_counter() - t0
    if prec == "float32":
        accuracy["kernels"] = ("float32 GEMMs: on the 4x256 example every eigenvalue of Theta is within 7.9e-8 "
                               "lambda_1 of the float64 kernels' (tests: within 1e-5 lambda_1)")  # fmt: skip
    if krylov:
        accuracy["groups"] = {
            "solver": "block Krylov (float64 basis, float32 products), one Rayleigh-Ritz",
            "bound": ("effective rank within effective_rank_bounds: upper bound unconditional (Cauchy "
                      "interlacing + exact trace), lower bound and numerical_rank_bounds from the residual "
                      "intervals, assuming no eigenvalue was missed (random start block)"),
            "width": EFF_RANK_WIDTH, "krylov_dims": krylov,
        }  # fmt: skip
        notes.append(f"{', '.join(krylov)}: ranks from the top of the spectrum (block Krylov), "
                     "effective rank within the bounds in the JSON (width <= "
                     f"{EFF_RANK_WIDTH:.0%}); --dtype float64 computes every eigenvalue")  # fmt: skip
    if fallback:
        notes.append(f"{', '.join(fallback)}: a Krylov space would not pin the ranks by dimension N/4 (a flat "
                     "spectrum); all eigenvalues by float64 eigvalsh instead")  # fmt: skip
    if auto:
        precision = (f"float32 kernels; {solver} for Theta" + (" and the groups with p >= N" if krylov else "")
                     + "; float64 eigvalsh of the p x p Grams for p < N")  # fmt: skip
    else:
        precision = f"{prec} kernels; {solver} for Theta and every group"
    solved.accuracy, solved.precision, solved.notes = accuracy, precision, notes
    return solved


def _lanczos(factors: list[Factor], traces: list[float], cfg: NTKConfig, n: int, prec: str,
             device: torch.device, seconds: dict[str, float]) -> _Solved:  # fmt: skip
    """Top-k of Theta by block Lanczos on the matrix-free product; per group the Gram or the top eigenvalue."""
    auto = cfg.dtype == "auto"
    tdtype = getattr(torch, prec)
    tol, total = cfg.tol, sum(traces)
    t0 = time.perf_counter()
    comp = [f.compressed(reuse=True) for f in factors]  # in place: the factors are ours (metadata only from here)
    big = [i for i, c in enumerate(comp) if c.feature_dim > SMALL_GRAM]
    t1 = time.perf_counter()
    # the small groups' spectra first: the cut below rotates the factors in place (same kernels, to rounding)
    small = {i: _eigvalsh_desc(c.khatri_rao_gram()) for i, c in enumerate(comp) if i not in big}
    t_small = time.perf_counter() - t1
    etol = cfg.eig_tol if cfg.eig_tol is not None else EIG_TOL[prec]
    notes: list[str] = []
    sol = lanczos_topk(
        comp, n, cfg.top_k, etol, total, device, tdtype, cfg.block, cfg.seed, cfg.lowrank, big, overwrite=True
    )
    if auto and not sol.topk.converged:
        notes.append(f"float32 products stalled above tol {etol:g} after {sol.topk.products} products: "
                     "solved again with float64 products")  # fmt: skip
        prec, tdtype = "float64", torch.float64
        del sol  # its float32 factors (and their cached products) go before the float64 ones are made
        comp = [f.with_factors(f.A.double(), f.D.double()) for f in comp]
        sol = lanczos_topk(
            comp, n, cfg.top_k, etol, total, device, tdtype, cfg.block, cfg.seed, cfg.lowrank, big, overwrite=True
        )
    res, bound = sol.topk, sol.bound
    seconds["eigen"] = time.perf_counter() - t0 - t_small
    eigs = res.values.clamp_min(0).tolist()
    worst = max(r + bound / max(v, 1e-300) for r, v in zip(res.relative_residuals, eigs)) if eigs else 0.0
    accuracy = {"solver": f"block Lanczos (block {cfg.block}, {prec} products, float64 basis)", **res.to_dict(),
                "compression_bound": bound, "max_relative_error_bound": worst,
                "bound": "||Theta u - theta u|| / theta <= relative_residual + compression_bound / theta for "
                         "every returned pair; each eigenvalue moves by at most compression_bound (Weyl)"}  # fmt: skip
    if not res.converged:
        notes.append(f"Lanczos stopped after {res.products} products before reaching tol {etol:g}; "
                     "see accuracy.relative_residuals")  # fmt: skip
    nrank = sum(1 for v in eigs if v > tol * eigs[0]) if eigs and eigs[-1] <= tol * eigs[0] else None
    t0 = time.perf_counter()
    groups: list[GroupNTK] = []
    partial: list[str] = []
    refined: list[str] = []
    gtol = max(etol, 1e-6)
    for i, (f, tr) in enumerate(zip(factors, traces)):
        if i in small:
            groups.append(_group_from_eigs(f, small[i], n, tr, total, tol))
            continue
        # the top eigenvalue of the group's low-rank kernel, within its bound b of Theta_g's (Weyl): its
        # Rayleigh-Ritz pair on the Lanczos basis of Theta (free), refined by its own solve from there if needed
        part = res.parts[i]
        value, resid, how = part.value, part.relative_residual, "Rayleigh-Ritz on the Lanczos basis of Theta"
        if not resid <= gtol:
            r1 = topk_eigh(sol.factors[i].matmul, n, 1, dtype=torch.float64, device=device, compute_dtype=tdtype,
                           block=1, tol=gtol, seed=cfg.seed, start=part.vector[:, None])  # fmt: skip
            value, resid, how = float(r1.values[0]), r1.relative_residuals[0], "its own block Lanczos"
            refined.append(f.name)
        groups.append(GroupNTK(
            index=f.index, name=f.name, kind=f.kind, parameters=f.parameters, trace=tr,
            trace_share=_share(tr, total), top_eigenvalue=value, numerical_rank=None, effective_rank=None,
            max_rank=min(n, f.feature_dim), spectrum="top",
            note=(f"top eigenvalue of the low-rank factor's kernel ({how}; relative residual {resid:.1e}), within "
                  f"{sol.bounds[i]:.3g} (compression bound) plus that residual; ranks need all N eigenvalues: use "
                  "--method exact with fewer --points")))  # fmt: skip
        partial.append(f.name)
    seconds["groups"] = time.perf_counter() - t0 + t_small
    notes.append("effective rank of Theta needs all eigenvalues: null in lanczos mode")
    if partial:
        notes.append(f"lanczos mode: ranks of {', '.join(partial)} not computed (their Khatri-Rao width "
                     f"exceeds {SMALL_GRAM}); trace shares are exact, top eigenvalues within the compression "
                     "bound plus their residual")  # fmt: skip
    if partial:
        accuracy["groups"] = {"solver": "Rayleigh-Ritz on the final Lanczos basis of Theta (no extra product); "
                                        f"its own block Lanczos when the residual exceeds {gtol:g}",
                              "refined": refined}  # fmt: skip
    precision = f"{prec} products with a float64 Lanczos basis; float64 eigvalsh of the Grams for p <= {SMALL_GRAM}"
    return _Solved(eigenvalues=eigs, effective_rank=None, numerical_rank=nrank, groups=groups, accuracy=accuracy,
                   precision=precision, dtype=prec, spectrum="top", vectors=res.vectors if cfg.vectors else None,
                   notes=notes)  # fmt: skip


def ntk_report(model: Any, config: NTKConfig | None = None, **options: Any) -> NTKReport:
    """The empirical NTK of ``model`` on a coordinate grid (or a seeded random subset of it).

    ``model``: a CoordMLP, any ``nn.Module`` mapping (N, d) coordinates to (N, C), an ``inrdiag.Loaded``
    or a ``ModuleAdapter``; ``in_features`` is d when the module cannot tell (see ``inrdiag.models.adapter``).
    Every ``nn.Parameter`` counts (``requires_grad`` is ignored: register constants as buffers).

    ``config``: an ``NTKConfig`` (default ``NTKConfig()``); ``options``: any of its fields, overriding it
    (``ntk_report(model, grid=32, dtype="auto")``).

    ``top_k`` eigenpairs are computed (all eigenvalues in exact mode with float64/float32); ``vectors=True``
    keeps the top-k eigenvectors (all N in exact mode) on the report for target alignment. ``eig_tol`` is
    the Lanczos stopping tolerance on ``||Theta u - theta u|| / theta`` (default 1e-8 in float64, 1e-3
    in float32: float32 products leave a residual floor near 1e-4).

    ``dtype="auto"`` (the command's default) is chosen for speed with a checked accuracy: float32 products
    and float64 bases. Exact mode: float32 kernels; Theta and every group whose Khatri-Rao width p is at
    least N get the top of their spectrum from a block Krylov space (float64 basis, float32 products),
    grown until the numerical rank is pinned, the effective rank is within 1% and at least
    ``max(top_k, 100)`` (``top_k`` for a group) eigenvalues are converged; the eigenvalue error bound
    is reported (``accuracy.eigenvalue_error``, relative to lambda_1); with ``vectors`` Theta gets a float64
    ``eigh``. Lanczos mode: float32 products with a float64 basis, solved again in float64 if the
    residuals stall above the tolerance. ``"float64"`` keeps every product and every eigensolve in
    float64 (the reference); ``"float32"`` runs the products in float32 and every eigensolve in float64.
    ``lowrank`` lets the Lanczos products run on factors compressed to the directions that matter,
    with a proven spectral-norm bound kept below ``eig_tol`` times the smallest returned eigenvalue
    (``Factor.lowrank``); the bound is reported in ``accuracy``.
    """
    cfg = make_config(config, **options)
    names = list(cfg.layer_names) if cfg.layer_names is not None else None
    ad = as_adapter(model, in_features=cfg.in_features, names=names)
    spec = ad.spec
    prec = "float32" if cfg.dtype == "auto" else cfg.dtype
    tdtype = getattr(torch, prec)
    itemsize = 8 if prec == "float64" else 4
    dev = resolve_device(cfg.device)
    pts = ntk_points(ad.in_features, cfg.grid, cfg.points, cfg.seed, tdtype, dev)
    x, n = pts.coords, pts.count
    if cfg.top_k > n:
        raise InrdiagError(f"--top-k must be in 1..{n} (the number of points), got {cfg.top_k}; "
                           "lower --top-k or use more --points/--grid")  # fmt: skip
    meth = choose_method(cfg.method, n, ad, itemsize)
    need = _factor_bytes(ad, n, itemsize)
    if meth == "exact":
        need += 4.0 * n * n * 8
    else:
        need += 2.0 * n * max(3 * cfg.top_k, cfg.top_k + 6 * cfg.block) * 8 * 4 + 8.0 * (1 << 22) * itemsize
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
    factors = layer_factors(m, x)
    seconds["factors"] = time.perf_counter() - t0
    traces = [float(f.diag().to(torch.float64).sum()) for f in factors]
    # A finite diagonal bounds every entry (|Theta_nm| <= sqrt(Theta_nn Theta_mm), Theta PSD): one check
    if not all(math.isfinite(t) for t in traces):
        raise InrdiagError("the NTK is not finite (NaN/Inf); check the weights")
    if meth == "exact":
        solved = _exact(factors, traces, cfg, n, prec, seconds)
    else:
        solved = _lanczos(factors, traces, cfg, n, prec, dev, seconds)
    notes += solved.notes
    eigs = solved.eigenvalues
    lam1 = eigs[0] if eigs else 0.0
    decay = {str(k): (eigs[k - 1] / lam1 if lam1 > 0 and len(eigs) >= k else None) for k in DECAY_AT}
    kk = min(cfg.top_k, len(eigs))
    cond = lam1 / eigs[kk - 1] if kk and eigs[kk - 1] > 0 else math.inf
    if cfg.dtype == "auto":
        notes.append(f"precision (--dtype auto): {solved.precision}")
    return NTKReport(
        grid_shape=list(pts.shape), points=n, subset=pts.indices is not None, seed=cfg.seed, method=meth,
        dtype=solved.dtype, device=str(dev), top_k=cfg.top_k, tol=cfg.tol, eigenvalues=eigs, trace=sum(traces),
        decay=decay, effective_rank=solved.effective_rank, numerical_rank=solved.numerical_rank,
        condition_number_top_k=cond, groups=solved.groups, accuracy=solved.accuracy, seconds=seconds, notes=notes,
        vectors=solved.vectors, coords=x, indices=pts.indices, dtype_requested=cfg.dtype,
        precision=solved.precision, spectrum=solved.spectrum, effective_rank_bounds=solved.effective_rank_bounds,
        numerical_rank_bounds=solved.numerical_rank_bounds,
    )  # fmt: skip


def _module_notes(ad: ModuleAdapter, groups: list[GenericGroup]) -> list[str]:
    """What the NTK of a module inrdiag did not build rests on: the exact and generic groups, and why."""
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
