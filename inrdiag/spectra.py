"""Representation spectra and weight stable ranks (DESIGN.md section 3).

For hidden layer k, ``Z_k`` is the N x d_k matrix of its post-activation outputs on a grid. Its
singular values come from the eigenvalues of the d_k x d_k Gram matrix ``Z_k^T Z_k``, accumulated
over chunks of the grid in float64: memory stays O(chunk x width) whatever N, and one GEMM per
chunk is the whole cost. (Singular values below ~1e-7 s_1 sit at float64's floor for this method;
every statistic below uses thresholds far above it.)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .constants import DEFAULT_TOL
from .device import resolve_device
from .errors import InrdiagError
from .gram import add_lower, mirror_lower
from .grid import available_memory, check_memory, grid_shape, make_grid
from .models.adapter import as_adapter, cast_module
from .models.spec import RELU_LIKE

#: Points per forward chunk: bounds memory at about chunk * sum(widths) * 8 bytes * 3. At most 8192 keeps a
#: 256-wide float64 block at 16 MiB, under glibc's largest mmap threshold (32 MiB), so the blocks are
#: reused from the heap instead of being mapped and page-faulted afresh every chunk (measured on the
#: 4x256 net at 256^2: system time 0.9-1.0 s -> 0.25 s, the user time unchanged). 2048 keeps them in
#: cache: the forward and Grams of that net at 256^2 took 1.24 s against 1.54 s at 8192 and 1.36 s at 512
#: (``benchmarks/bench_rank.py``, alternated in one process, 2-core VM, 2026-12-01).
CHUNK = 2048
#: Column blocks of the representation Grams ``Z^T Z``: the lower block triangle is computed, then mirrored
#: (at width 256: 10/16 of the flops; ``benchmarks/bench_rank.py`` times the four Grams of the 4x256 net at
#: 256^2 both ways in one run: 0.70 s as full GEMMs, 0.62 s in blocks of 64).
GRAM_BLOCK = 64


@dataclass
class SpectrumStats:
    """Rank statistics of one N x d matrix from its singular values (descending)."""

    numerical_rank: int
    effective_rank: float
    stable_rank: float
    #: min(N, d): the largest rank the matrix could have; the fractions divide by it.
    max_rank: int
    singular_values: list[float]
    dead_units: int | None = None
    #: d: columns of the matrix (a representation's width; None when not given).
    width: int | None = None

    @property
    def numerical_rank_fraction(self) -> float:
        return self.numerical_rank / self.max_rank

    @property
    def effective_rank_fraction(self) -> float:
        return self.effective_rank / self.max_rank

    @property
    def stable_rank_fraction(self) -> float:
        return self.stable_rank / self.max_rank

    def to_dict(self) -> dict[str, Any]:
        return {
            "numerical_rank": self.numerical_rank,
            "numerical_rank_fraction": self.numerical_rank_fraction,
            "effective_rank": self.effective_rank,
            "effective_rank_fraction": self.effective_rank_fraction,
            "stable_rank": self.stable_rank,
            "stable_rank_fraction": self.stable_rank_fraction,
            "max_rank": self.max_rank,
            "singular_values": self.singular_values,
            "dead_units": self.dead_units,
            "width": self.width,
        }


def spectrum_stats(
    s: Iterable[float] | torch.Tensor,
    max_rank: int,
    tol: float = DEFAULT_TOL,
    dead_units: int | None = None,
    width: int | None = None,
) -> SpectrumStats:
    """Numerical rank ``#{s_i > tol s_1}``, effective rank ``exp(H(s / sum s))`` (Roy & Vetterli 2007,
    singular values not squared), stable rank ``sum s_i^2 / s_1^2``, from singular values ``s``."""
    vals = sorted((max(float(v), 0.0) for v in s), reverse=True)
    s1 = vals[0] if vals else 0.0
    if s1 <= 0.0:
        return SpectrumStats(0, 0.0, 0.0, max_rank, vals, dead_units, width)
    total = sum(vals)
    entropy = -sum((v / total) * math.log(v / total) for v in vals if v > 0)
    return SpectrumStats(
        numerical_rank=sum(1 for v in vals if v > tol * s1),
        effective_rank=math.exp(entropy),
        stable_rank=sum(v * v for v in vals) / (s1 * s1),
        max_rank=max_rank,
        singular_values=vals,
        dead_units=dead_units,
        width=width,
    )


def weight_stable_rank(W: torch.Tensor) -> float:
    """``||W||_F^2 / s_max(W)^2`` in float64 (complex128 for complex W; 1 for rank one, up to min(out, in))."""
    W = W.detach().to(torch.complex128 if W.is_complex() else torch.float64)
    s = torch.linalg.svdvals(W)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0.0
    return float((s**2).sum() / s[0] ** 2)


@dataclass
class LayerRank:
    """One linear layer of a rank report: its weight's stable rank and the spectrum of its representation."""

    index: int
    name: str
    in_features: int
    out_features: int
    weight_stable_rank: float
    #: None for the output head (it has no activation).
    representation: SpectrumStats | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "weight_stable_rank": self.weight_stable_rank,
            "representation": None if self.representation is None else self.representation.to_dict(),
        }


@dataclass
class RankReport:
    """What ``rank_report`` measured: every linear layer on a coordinate grid and the freeze depth it suggests."""

    grid_shape: list[int]
    points: int
    tol: float
    activation: str
    layers: list[LayerRank]
    #: Linear-layer indices eligible as the last frozen layer (hidden layers; cohort: the encoder).
    freeze_candidates: list[int]
    recommended_freeze_depth: int
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": {"shape": self.grid_shape, "points": self.points},
            "tol": self.tol,
            "activation": self.activation,
            "device": self.device,
            "layers": [layer.to_dict() for layer in self.layers],
            "freeze_candidates": self.freeze_candidates,
            "recommended_freeze_depth": self.recommended_freeze_depth,
            "notes": self.notes,
        }


def recommend_freeze_depth(stable_ranks: list[float], candidates: list[int]) -> int:
    """k* = 1 + the candidate layer of highest weight stable rank (first one on ties)."""
    if not candidates:
        raise InrdiagError("no hidden layers to choose a freeze depth from")
    best = max(candidates, key=lambda k: (stable_ranks[k], -k))
    return best + 1


def gram_spectra(
    model: Any,
    shape: tuple[int, ...],
    device: torch.device | str | None = None,
    chunk: int = CHUNK,
    in_features: int | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Float64 Gram matrices ``Z_k^H Z_k`` of every layer with a representation, over the grid, and
    alive-unit masks.

    ``model``: anything ``as_adapter`` takes, already in float64 on ``device``. Returns (grams, alive),
    lists in the order of ``as_adapter(model).hidden`` (a CoordMLP's hidden layers 0..L-1);
    ``alive[k]`` is a bool vector: unit ever nonzero on the grid, read off the Gram diagonal
    (``sum_n |z_nj|^2 = 0`` exactly when unit j is zero everywhere). Complex representations give
    complex Hermitian Grams with the same singular values. The representations come from the
    adapter's own partial pass (``ModuleAdapter.all_features``), one forward per chunk.
    """
    ad = as_adapter(model, in_features=in_features)
    grid = make_grid(shape, dtype=torch.float64, device=device)
    ks = ad.hidden
    reps = [ad.representation(k) for k in ks]
    grams = [torch.zeros(r.width, r.width, dtype=torch.complex128 if r.dtype.is_complex else torch.float64,
                         device=device) for r in reps]  # fmt: skip
    with torch.no_grad():
        for start in range(0, grid.shape[0], chunk):
            zs = ad.all_features(grid[start : start + chunk])
            for g, k in zip(grams, ks):
                a = zs[k]
                if a.is_complex():
                    g.addmm_(a.mH, a)
                else:
                    add_lower(g, a, GRAM_BLOCK)
    for g in grams:  # the real Grams' strict upper part, from their lower block triangle
        if not g.is_complex():
            mirror_lower(g, GRAM_BLOCK)
    for k, g in zip(ks, grams):  # NaN/Inf anywhere in Z_k reaches its Gram matrix
        if not bool(torch.isfinite(g).all()):
            raise InrdiagError(f"hidden layer {k} is not finite on the grid (NaN/Inf); check the weights")
    alive = [torch.diagonal(g).real > 0 for g in grams]
    return grams, alive


def rank_report(
    model: Any,
    grid: int | tuple[int, ...] | None = None,
    tol: float = DEFAULT_TOL,
    device: str = "auto",
    shared_layers: int | None = None,
    layer_names: list[str] | None = None,
    in_features: int | None = None,
) -> RankReport:
    """Per-layer weight stable ranks and representation spectra of ``model`` on a coordinate grid.

    ``model``: a CoordMLP, any ``nn.Module`` mapping (N, d) coordinates to (N, C), an ``inrdiag.Loaded``
    or a ``ModuleAdapter`` (see ``inrdiag.models.adapter``); ``in_features`` is d when the module cannot tell.
    ``grid`` is the number of points per axis (default 256 in 2-D, 48 in 3-D). ``shared_layers``
    limits the freeze-depth candidates to a cohort's shared encoder (a Loaded cohort gives its own).
    Every linear layer gets its weight stable rank; every layer with a representation (the input of
    the next linear layer) its spectrum. Dead units: for a CoordMLP, units of a ReLU-like activation
    that are zero on the whole grid (None for other activations, as they cannot be exactly zero on a
    half-line); for any other module, columns of the representation exactly zero on every grid point.
    """
    if not (0 < tol < 1):
        raise InrdiagError(f"--tol must be in (0, 1), got {tol}")
    ad = as_adapter(model, in_features=in_features, names=layer_names)
    if shared_layers is None:
        shared_layers = ad.shared_layers
    d = ad.in_features
    shape = grid_shape(d, grid)
    n = math.prod(shape)
    hidden_idx = ad.hidden
    if not hidden_idx:
        raise InrdiagError(f"{ad.kind} has no layer with a representation (one linear layer?): nothing to rank")
    widths = [ad.representation(k).width for k in hidden_idx]
    chunk = min(CHUNK, n)
    need = 8.0 * (n * d + 3 * chunk * (sum(widths) + ad.input_width) + sum(w * w for w in widths))
    check_memory(need, f"a {'x'.join(map(str, shape))} grid", "--grid", available_memory() / 2)
    dev = resolve_device(device)
    a64 = ad.copy(dev, torch.float64)
    for name, p in a64.module.state_dict().items():
        if (p.is_floating_point() or p.is_complex()) and not bool(torch.isfinite(p).all()):
            raise InrdiagError(f"weights are not finite ({name} holds NaN/Inf); `inrdiag info` lists them")
    grams, alive = gram_spectra(a64, shape, dev, chunk)
    by_layer = {k: (g, al) for k, g, al in zip(hidden_idx, grams, alive)}
    spec = ad.spec if ad.is_coord_mlp else None
    coord = spec is not None
    layers: list[LayerRank] = []
    for k, layer in enumerate(a64.layers):
        rep = None
        if k in by_layer:
            g, al = by_layer[k]
            eig = torch.linalg.eigvalsh(g).clamp_min(0).sqrt().flip(0)
            relu_like = spec is not None and spec.activation in RELU_LIKE
            dead = int((~al).sum()) if relu_like or not coord else None
            rep = spectrum_stats(eig.tolist(), min(n, g.shape[0]), tol, dead, int(g.shape[0]))
        W = layer.module.weight
        layers.append(LayerRank(k, layer.name, int(W.shape[1]), int(W.shape[0]), weight_stable_rank(W), rep))
    candidates = hidden_idx if shared_layers is None else hidden_idx[: max(1, min(shared_layers, len(hidden_idx)))]
    srs = [layer.weight_stable_rank for layer in layers]
    notes: list[str] = []
    if shared_layers is not None:
        notes.append(f"freeze depth chosen within the shared encoder (layers 0..{candidates[-1]})")
    if not coord:
        notes.append(f"{ad.kind} is not an inrdiag CoordMLP: linear layers found by forward hooks in call order; "
                     "a layer's representation is the input of the next linear layer called")  # fmt: skip
        notes.append("dead units: columns of a representation that are exactly zero on every grid point")
        notes += a64.structure_notes()
    return RankReport(
        grid_shape=list(shape), points=n, tol=tol, activation=spec.activation if spec is not None else "unknown",
        layers=layers, freeze_candidates=candidates, recommended_freeze_depth=recommend_freeze_depth(srs, candidates),
        device=str(dev), notes=notes,
    )  # fmt: skip


def layer_ranks(
    model: nn.Module, shape: tuple[int, ...], tol: float = DEFAULT_TOL, device: torch.device | str | None = None
) -> list[SpectrumStats]:
    """SpectrumStats of every hidden layer's Z_k on the grid of ``shape`` (float64, eval mode); ``model``
    is a CoordMLP or any module mapping ``len(shape)`` coordinates to outputs."""
    m64 = cast_module(copy.deepcopy(model), device, torch.float64).eval()
    grams, alive = gram_spectra(m64, shape, device, in_features=len(shape))
    n = math.prod(shape)
    out: list[SpectrumStats] = []
    for g, a in zip(grams, alive):
        s = torch.linalg.eigvalsh(g).clamp_min(0).sqrt().flip(0)
        out.append(spectrum_stats(s.tolist(), min(n, g.shape[0]), tol, int((~a).sum())))
    return out
