"""The low-rank cut of the layer-wise NTK's factors (``Factor.lowrank``, ``lowrank_all``): a cheaper kernel
within a proven spectral-norm bound of each group's, and the top-k solve of ``ntk --top-k`` on it
(``lanczos_topk``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .config import DEFAULT_BLOCK
from .dense import dense_eigh
from .eigen import TopK, topk_eigh
from .factors import Factor, LowRank, gram64

#: Columns per group of the staircase cut of ``Factor.lowrank``. Smaller groups keep fewer columns but run
#: smaller GEMMs: one block product of the 4x256 example's hidden layers at N = 65,536, with the shared
#: budget, took 539-972, 442-657 and 422-686 ms with groups of 16, 32 and 64 (29,479, 28,199 and 33,182
#: columns; 64 the fastest in two of three runs, 32 in one: ``bench_ntk.py --part topk``).
CUT_GROUP = 64
#: Row blocks of the compression's tall-skinny products ``X V`` (N x p by p x p): as fast as one call or
#: faster, by the width (65,536 x 232: 1.03x, ``bench_ntk.py --part topk``; 65,536 x 213: 127-181 ms in one
#: call, 107-140 ms by blocks, a one-off timing on the 2-core VM).
ROWS_MM = 1024


@dataclass(frozen=True)
class _Plan:
    """A staircase cut: ``blocks`` = (columns kept of P, first and end column of Q), its cost and bound."""

    blocks: list[tuple[int, int, int]]
    cost: int
    bound: float


def _rows_mm(X: Tensor, V: Tensor, rows: int = ROWS_MM) -> Tensor:
    """``X @ V`` for a tall X (N x p, p x q with p, q small), by row blocks of ``rows``."""
    out = torch.empty(X.shape[0], V.shape[1], dtype=X.dtype, device=X.device)
    for s in range(0, X.shape[0], rows):
        torch.mm(X[s : s + rows], V, out=out[s : s + rows])
    return out


def _rotate_(X: Tensor, V: Tensor, rows: int = ROWS_MM) -> Tensor:
    """``X @ V`` (V square) written over X, by row blocks of ``rows`` through one block-sized buffer; X returned."""
    buf = torch.empty(min(rows, X.shape[0]), V.shape[1], dtype=X.dtype, device=X.device)
    for s in range(0, X.shape[0], rows):
        blk = X[s : s + rows]
        blk.copy_(torch.mm(blk, V, out=buf[: blk.shape[0]]))
    return X


def _rotated_basis(X: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending, float64, >= 0) and eigenvectors of ``X^T X``: ``X V`` has orthogonal
    columns of squared norms ``w``."""
    e = dense_eigh(gram64(X))
    return e.values.flip(0).clamp_min(0), e.vectors.flip(1)


def _sum_dtype(X: Tensor) -> torch.dtype:
    """The dtype the row statistics are summed in: X's own when float32 or float64 (no copy of X in a wider
    type; the rounding is bounded instead: ``_upper``), else float32."""
    return X.dtype if X.dtype in (torch.float32, torch.float64) else torch.float32


def _upper(s: Tensor, terms: int) -> Tensor:
    """An upper bound of the exact sums behind ``s``: sums of ``terms`` rounded squares, in s's dtype.

    Whatever the order of summation, a sum of k nonnegative terms carries a relative error of at most
    ``gamma_k = k u / (1 - k u)`` (u the unit roundoff), and each square ``u`` more; ``(1 + 2 (k + 1) u)``
    covers both while ``(k + 1) u <= 0.1``, and ``(k + 1)`` smallest normals cover squares that underflowed.
    Returned in float64."""
    fi = torch.finfo(s.dtype)
    k = terms + 1
    u = fi.eps / 2
    if k * u > 0.1:  # the bound above no longer holds (millions of float32 columns): a caller's bug
        raise ValueError(f"row statistics over {terms} columns in {s.dtype}: rounding bound not valid")
    return s.to(torch.float64) * (1 + 2 * k * u) + k * fi.tiny


def _group_row_max(X: Tensor, edges: list[int], chunk: int = 4096) -> Tensor:
    """An upper bound of ``max_n sum_{j in [edges[i], edges[i+1])} X_nj^2`` for every i (float64), over row
    chunks, summed in X's dtype with the rounding bounded (``_upper``). With ``_tail_row_max`` on a 65,536 x
    232 float32 factor: 60 ms, against 90 ms summing float64 copies of the chunks, the bounds within 3e-5 of
    those sums (``bench_ntk.py --part topk``)."""
    dt = _sum_dtype(X)
    out = torch.zeros(len(edges) - 1, dtype=dt, device=X.device)
    for s in range(0, X.shape[0], chunk):
        c = X[s : s + chunk].to(dt, copy=True).square_()  # a copy: never square X itself
        sums = torch.stack([c[:, a:b].sum(1) for a, b in zip(edges[:-1], edges[1:])], dim=1)
        out = torch.maximum(out, sums.max(0).values)
    width = max((b - a for a, b in zip(edges[:-1], edges[1:])), default=0)
    return _upper(out, width)


@dataclass
class _StairTable:
    """One orientation of a factor's staircase cut: Q's column groups (``edges``) and, for every group and
    every count a = 0..p of P's columns kept, the cost ``|g| a`` and the Schur bound of what is dropped."""

    P: Tensor
    Q: Tensor
    edges: list[int]
    B: Tensor
    cost: Tensor

    def pick(self, lam: float) -> tuple[Tensor, float, float]:
        """The columns kept per group minimising ``cost + lam bound``, with that cost and bound."""
        a = torch.argmin(self.cost + lam * self.B, dim=1)
        return a, float(self.cost.gather(1, a[:, None]).sum()), float(self.B.gather(1, a[:, None]).sum())

    def plan(self, a: Tensor) -> _Plan:
        """The cut keeping ``a[g]`` columns of P for group g (never an empty sum: at least P's top direction)."""
        a = a.clone()
        if not bool(a.any()):  # B only falls with a, so the bound stays within what was chosen
            a[0] = 1
        bound = float(self.B.gather(1, a[:, None]).sum())
        blocks: list[tuple[int, int, int]] = []
        for s, e, k in zip(self.edges[:-1], self.edges[1:], a.tolist()):
            if k == 0:
                continue
            if blocks and blocks[-1][0] == k and blocks[-1][2] == s:  # same P columns as the group before: one part
                blocks[-1] = (k, blocks[-1][1], e)
            else:
                blocks.append((k, s, e))
        return _Plan(blocks=blocks, cost=sum(k * (e - s) for k, s, e in blocks), bound=bound)


def _stair_table(P: Tensor, wp: Tensor, Q: Tensor, wq: Tensor, group: int | None = None) -> _StairTable:
    """The costs and bounds of the staircase cuts of ``(P P^T) ⊙ (Q Q^T)`` (both rotated: ``Factor.lowrank``)
    with Q in column groups of ``group`` (default ``CUT_GROUP``)."""
    p, q = P.shape[1], Q.shape[1]
    edges = [*range(0, q, group or CUT_GROUP), q]
    starts = edges[:-1]
    sizes = torch.tensor([e - s for s, e in zip(edges[:-1], edges[1:])], dtype=torch.float64, device=P.device)
    mu = torch.cat([wp, wp.new_zeros(1)])  # ||P_tail||^2 keeping a columns, a = 0..p
    tail = torch.cat([_tail_row_max(P), wp.new_zeros(1)])  # max_n |p_tail,n|^2 keeping a columns
    m = _group_row_max(Q, edges)  # max_n |q_g,n|^2
    sig = wq[torch.tensor(starts, device=P.device)]  # ||Q_g||^2: the group's first (largest) eigenvalue
    B = torch.minimum(mu[None, :] * m[:, None], tail[None, :] * sig[:, None])  # groups x (p + 1)
    cost = sizes[:, None] * torch.arange(p + 1, dtype=torch.float64, device=P.device)[None, :]
    return _StairTable(P=P, Q=Q, edges=edges, B=B, cost=cost)


def _staircase(P: Tensor, wp: Tensor, Q: Tensor, wq: Tensor, budget: float, group: int | None = None) -> _Plan:
    """The cheapest cut of ``(P P^T) ⊙ (Q Q^T)`` (both rotated: ``Factor.lowrank``) with Q in column groups
    and group g keeping ``a_g`` columns of P, under ``bound <= budget``."""
    t = _stair_table(P, wp, Q, wq, group)
    full = float(t.cost[:, -1].sum())
    lam = _multiplier(lambda x: t.pick(x)[2], full, budget)
    if lam is None:
        return _Plan(blocks=[(P.shape[1], 0, Q.shape[1])], cost=P.shape[1] * Q.shape[1], bound=0.0)
    return t.plan(t.pick(lam)[0])


def _multiplier(bound_at: Any, full_cost: float, budget: float) -> float | None:
    """The smallest Lagrange multiplier (log bisection, 60 steps) whose choice keeps ``bound_at(lam) <=
    budget``; 0 for an infinite budget (the cheapest choice); None when the budget is too small to weigh
    (or NaN): no cut."""
    if budget == math.inf:
        return 0.0
    scale = full_cost / budget if budget > 0 else math.nan
    if not (math.isfinite(scale) and scale > 0):
        return None
    lo, hi = math.log(scale * 1e-12), math.log(scale * 1e12)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if bound_at(math.exp(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)  # at hi every choice keeps everything that bounds anything: bound 0


class _Candidates:
    """The cuts one factor can take, for a Lagrange multiplier shared by several factors (``lowrank_all``)."""

    def __init__(self, f: Factor, overwrite: bool = False):
        self.f = f
        self.tables: list[_StairTable] = []
        self.single: tuple[Tensor, Tensor, Tensor] | None = None  # X, its rotation V, bounds by columns kept
        pa, pd = f.A.shape[1], f.D.shape[1]
        if min(pa, pd) == 1:  # Theta_g = X X^T with X = A * D: cut X itself
            X = f.A * f.D
            w, V = _rotated_basis(X)
            self.single = (X, V, torch.cat([w, w.new_zeros(1)]))  # keeping j columns: bound w[j], j = 0..p
            self.kept = torch.arange(1, X.shape[1] + 1, dtype=torch.float64, device=w.device)  # j = 1..p: cost j
        elif min(pa, pd) > 4:
            wa, Va = _rotated_basis(f.A)
            wd, Vd = _rotated_basis(f.D)
            rotate = _rotate_ if overwrite and f.A.is_contiguous() and f.D.is_contiguous() else _rows_mm
            Ar, Dr = rotate(f.A, Va.to(f.A.dtype)), rotate(f.D, Vd.to(f.D.dtype))
            self.tables = [_stair_table(Ar, wa, Dr, wd), _stair_table(Dr, wd, Ar, wa)]

    def pick(self, lam: float) -> tuple[float, float, Any]:
        """(cost, bound, choice) minimising ``cost + lam bound``; cost in Khatri-Rao columns (flops / 4 N b)."""
        if self.single is not None:
            hb = self.single[2]
            j = int(torch.argmin(self.kept + lam * hb[1:])) + 1  # never N x 0: the top direction stays
            return float(j), float(hb[j]), j
        best: tuple[float, float, Any] = (float(self.f.feature_dim), 0.0, None)
        for i, t in enumerate(self.tables):
            a, c, b = t.pick(lam)
            if c + lam * b < best[0] + lam * best[1]:
                best = (c, b, (i, a))
        return best

    def make(self, choice: Any) -> LowRank:
        f = self.f
        if choice is None:
            return LowRank(parts=[f], bound=0.0)
        if self.single is not None:
            X, V, hb = self.single
            if choice >= X.shape[1]:
                return LowRank(parts=[f], bound=0.0)
            X2 = _rows_mm(X, V[:, :choice].to(X.dtype))
            return LowRank(parts=[f.with_factors(X2, torch.ones_like(X2[:, :1]))], bound=float(hb[choice]))
        t = self.tables[choice[0]]
        plan = t.plan(choice[1])
        if plan.cost >= f.feature_dim:
            return LowRank(parts=[f], bound=0.0)
        # contiguous copies: GEMMs on these column slices ran 15-25% slower as views (one block product)
        parts = [f.with_factors(t.P[:, :a].contiguous(), t.Q[:, s:e].contiguous()) for a, s, e in plan.blocks]
        return LowRank(parts=parts, bound=plan.bound)


def lowrank_all(factors: list[Factor], budget: float, overwrite: bool = False) -> list[LowRank]:
    """Every factor cut as ``Factor.lowrank`` cuts one, within one budget shared by all: the bounds sum to at
    most ``budget``.

    ``overwrite=True`` rotates a cut factor's A and D in their own memory (``A <- A V_A``, ``D <- D V_D``) instead
    of into new N x p copies: the factor keeps its kernel (``A V V^T A^T = A A^T``, to float rounding) and any
    later cut of it starts from its rotated form, and the 4x256 example at N = 65,536 skips 0.33 GB of new
    memory and its first-touch page faults.

    One Lagrange multiplier for all of them, so each column kept anywhere buys the same drop in the bound.
    Splitting the budget evenly instead left the uncut groups' shares (an inlet of 3 columns, say) unused and
    gave every layer the same share whatever its spectrum: on the 4x256 example at N = 65,536 and
    ``lanczos_topk``'s budget 0.0134 the hidden layers kept 39,313 columns that way (bound 0.0092 in all),
    33,182 shared (bound 0.0132): one block product 0.91-0.96x in three runs (``bench_ntk.py --part topk``)."""
    if not factors:
        return []
    if not budget > 0:  # 0, negative or NaN: nothing is cut
        return [LowRank(parts=[f], bound=0.0) for f in factors]
    cands = [_Candidates(f, overwrite) for f in factors]
    full = float(sum(f.feature_dim for f in factors))
    lam = _multiplier(lambda x: sum(c.pick(x)[1] for c in cands), full, budget)
    if lam is None:
        return [LowRank(parts=[f], bound=0.0) for f in factors]
    return [c.make(c.pick(lam)[2]) for c in cands]


def _tail_row_max(X: Tensor, chunk: int = 4096) -> Tensor:
    """An upper bound of ``max_n sum_{j >= a} X_nj^2`` for a = 0 .. p - 1 (float64), over row chunks, summed
    in X's dtype with the rounding bounded (``_upper``)."""
    dt = _sum_dtype(X)
    out = torch.zeros(X.shape[1], dtype=dt, device=X.device)
    for s in range(0, X.shape[0], chunk):
        c = X[s : s + chunk].flip(1).to(dt)  # flip copies: X itself is never touched
        c.square_().cumsum_(1)  # suffix sums, the last column first
        out = torch.maximum(out, c.max(0).values)
    return _upper(out.flip(0), X.shape[1])


@dataclass
class LanczosResult:
    """``lanczos_topk``'s result."""

    #: The top-k pairs of the operator the products ran on (and the tracked groups' Ritz pairs).
    topk: TopK
    #: ``||Theta - Theta'|| <= bound``: the compression bound incurred (0 without ``lowrank``).
    bound: float
    #: Each group's kernel the products ran on (cut when ``lowrank``; one part, the group's factor, when not).
    factors: list[LowRank]
    #: Each factor's own bound (they sum to ``bound``).
    bounds: list[float]


def lanczos_topk(
    comp: list[Factor],
    n: int,
    top_k: int,
    etol: float,
    trace: float,
    dev: torch.device | str | None,
    tdtype: torch.dtype,
    block: int = DEFAULT_BLOCK,
    seed: int = 0,
    lowrank: bool = True,
    track: list[int] | tuple[int, ...] = (),
    overwrite: bool = False,
) -> LanczosResult:
    """Top-k pairs of ``sum_g Theta_g``, on factors cut to a proven compression bound; the groups listed in
    ``track`` get their own top Ritz pair on the final basis (``topk.parts``).

    The compression budget starts at ``6 etol tr(Theta) / N``, shared by the groups (``lowrank_all``: one
    Lagrange multiplier; 10 with the earlier rectangular cut, which used about half of it); if the bound
    then exceeds half of ``etol`` times the smallest eigenvalue found, the
    factors are recompressed with a budget of a quarter of that and the problem solved again, so the
    bound's share of the stated error is at most ``etol / 2`` of each eigenvalue. ``overwrite``: the cut may
    rotate the factors in place (``lowrank_all``; their kernels stay the same).
    """

    def solve(factors: list[LowRank]) -> TopK:
        return topk_eigh(None, n, top_k, parts=[f.matmul for f in factors], track=track, dtype=torch.float64,
                         device=dev, compute_dtype=tdtype, block=block, tol=etol, seed=seed)  # fmt: skip

    whole = [LowRank(parts=[f], bound=0.0) for f in comp]
    zeros = [0.0] * len(comp)
    if not lowrank or trace <= 0:
        return LanczosResult(topk=solve(whole), bound=0.0, factors=whole, bounds=zeros)
    budget = 6.0 * etol * trace / n
    for _ in range(3):
        cuts = lowrank_all(comp, budget, overwrite)
        bound = sum(c.bound for c in cuts)
        res = solve(cuts)
        smallest = float(res.values[-1]) if res.values.numel() else 0.0
        if bound <= 0.5 * etol * smallest:
            return LanczosResult(topk=res, bound=bound, factors=cuts, bounds=[c.bound for c in cuts])
        budget = 0.25 * etol * smallest
        if budget <= 0:
            break
    return LanczosResult(topk=solve(whole), bound=0.0, factors=whole, bounds=zeros)
