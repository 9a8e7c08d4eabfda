"""Factors of the layer-wise empirical NTK (DESIGN.md section 3): ``Theta = sum_g Theta_g``.

Every parameter group g is held as two matrices, ``Theta_g = (A A^T) ⊙ (D D^T)``:

- a linear layer ``h_k = W_k a + b_k``: ``A`` = its inputs with a column of ones for the bias
  (N x (d_in + 1)), ``D`` = the sensitivities ``d f_c / d h_k`` of every output channel side by side
  (N x (C d_out)); ``(A A^T + 1) ⊙ sum_c D_c D_c^T`` is exactly ``sum_c J_c J_c^T`` restricted to W_k, b_k;
- any other group (batch-norm scale/shift, modulators, a learnable w0, a linear layer called twice,
  complex weights): ``A`` = the per-sample Jacobian rows of all channels side by side (N x (C p)),
  ``D`` = a column of ones, so ``Theta_g = A A^T``. Complex parameters count as their real and
  imaginary parts (two real parameters each), the NTK of gradient descent on ``(Re w, Im w)``.

The model is anything ``inrdiag.models.adapter.as_adapter`` takes: a linear layer is "exact-factor" when it is
called once per point with real, untied weights; its A and D come from the tensors the adapter's
forward hooks record. D comes from batched backward passes: in eval mode samples do not interact (the
adapter checks it), so the gradient of ``sum_n f_c(x_n)`` with respect to the outputs ``h_k`` (all n
at once) has row n equal to ``d f_c(x_n) / d h_k(x_n)``. One backward per output channel gives every
layer's D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InrdiagError
from ..gram import add_lower, mirror_lower
from ..models.adapter import as_adapter
from .eigen import dense_eigh

#: Rows per chunk of the forward/backward passes and of the Khatri-Rao Gram. Cache-sized: the factors of
#: the 4x256 net at N = 65,536 took 0.98 s at 2048 rows against 1.20 s at 8192 (``bench_ntk.py --part
#: topk``, alternated); the inlet's Khatri-Rao Gram 0.39 s against 0.40 s (a one-off timing).
CHUNK = 2048
#: Most rows per chunk of the matrix-free products (fewer when ``MATMUL_BUFFER`` says so): the staircase
#: factors' block product took 0.65 s at 8192 against 0.70 s at 2048 (best of 4, alternated).
MATMUL_CHUNK = 8192
#: Row blocks of ``Factor.kernel``: the lower block triangle is computed, the rest mirrored.
KERNEL_BLOCK = 256
#: Numbers in the chunk buffer of ``Factor.matmul`` (2 MiB of float32: L2/L3-resident; measured on the
#: 4x256 net at N = 65,536, block 4, one thread: 60 GFLOP/s against 46-52 at 4 MiB and 42 at 16 MiB).
MATMUL_BUFFER = 1 << 19
#: Columns per group of the staircase cut of ``Factor.lowrank``. Smaller groups keep fewer columns but run
#: smaller GEMMs: one block product of the 4x256 example's hidden layers at N = 65,536 took 611, 513 and
#: 452 ms with groups of 16, 32 and 64 (35,607, 34,513 and 39,313 columns; ``bench_ntk.py --part topk``).
CUT_GROUP = 64
#: Row blocks of the compression's tall-skinny products ``X V`` (N x p by p x p): as fast as one call or
#: faster, by the width (65,536 x 232: 1.03x, ``bench_ntk.py --part topk``; 65,536 x 213: 127-181 ms in one
#: call, 107-140 ms by blocks, a one-off timing on the 2-core VM).
ROWS_MM = 1024
#: Widest broadcast block (b times the narrower factor's columns) whose first GEMM of ``Factor.matmul`` is
#: split in two halves run side by side (bmm): such thin GEMMs run on one thread.
THIN_SPLIT = 64
#: Largest single-column factor ``X = A * D`` whose transpose ``Factor.matmul`` keeps as a contiguous copy.
SINGLE_COPY_BYTES = 256 << 20


@dataclass
class Factor:
    """One parameter group's kernel ``Theta_g = (A A^T) ⊙ (D D^T)`` (N x N), never formed unless asked."""

    index: int
    name: str
    #: "linear" (exact factorised form) or "generic" (per-sample Jacobian from torch.func).
    kind: str
    A: Tensor
    D: Tensor
    parameters: int
    #: Why a group is generic ("" for a linear layer): e.g. "BatchNorm1d (not an nn.Linear)".
    note: str = ""
    #: ``X = A * D`` and ``X^T`` (both contiguous) when A or D is a single column (``Theta_g = X X^T``),
    #: made once by ``matmul``.
    _single: tuple[Tensor, Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def points(self) -> int:
        return int(self.A.shape[0])

    @property
    def feature_dim(self) -> int:
        """Columns p of the Khatri-Rao factor K (rows ``a_n ⊗ d_n``): ``Theta_g = K K^T``, rank <= p."""
        return int(self.A.shape[1] * self.D.shape[1])

    def diag(self) -> Tensor:
        """``diag(Theta_g)_n = |a_n|^2 |d_n|^2``, so ``tr Theta_g`` costs O(N (d_in + d_out))."""
        return (self.A * self.A).sum(1) * (self.D * self.D).sum(1)

    def kernel(self, out: Tensor | None = None) -> Tensor:
        """The N x N matrix ``(A A^T) ⊙ (D D^T)``; added into ``out`` when given (then returned).

        Symmetric, so only its lower block triangle is computed (row blocks of ``KERNEL_BLOCK``: half the
        GEMM flops; measured 0.25 s against 0.37 s for a 4096 x 4096 hidden-layer kernel, one thread) and
        mirrored tile by tile."""
        A: Tensor = self.A
        D: Tensor | None = self.D
        assert D is not None
        if D.shape[1] == 1 and A.shape[1] == 1:
            v = A[:, 0] * D[:, 0]
            return torch.outer(v, v) if out is None else out.addr_(v, v)
        if D.shape[1] == 1 or A.shape[1] == 1:  # scalar-output head or a generic group: one Gram
            A, D = A * D, None
        n = A.shape[0]
        K = torch.empty(n, n, dtype=A.dtype, device=A.device)
        bs = KERNEL_BLOCK
        for s in range(0, n, bs):
            e = min(n, s + bs)
            blk = K[s:e, :e]  # rows s:e, columns 0:e: the lower block triangle and the diagonal block
            torch.mm(A[s:e], A[:e].T, out=blk)
            if D is not None:
                blk.mul_(D[s:e] @ D[:e].T)
        for s in range(0, n - bs, bs):  # mirror the strict upper part, tile by tile (cache-sized transposes)
            e = s + bs
            for r in range(e, n, bs):
                K[s:e, r : r + bs].copy_(K[r : r + bs, s:e].T)
        return K if out is None else out.add_(K)

    def khatri_rao_gram(self, chunk: int = CHUNK) -> Tensor:
        """``K^T K`` (p x p), with the same nonzero eigenvalues as ``Theta_g``; cheap when p << N."""
        p = self.feature_dim
        G = torch.zeros(p, p, dtype=self.A.dtype, device=self.A.device)
        for s in range(0, self.points, chunk):
            a, d = self.A[s : s + chunk], self.D[s : s + chunk]
            add_lower(G, (a[:, :, None] * d[:, None, :]).reshape(a.shape[0], p), KERNEL_BLOCK)
        return mirror_lower(G, KERNEL_BLOCK)

    def matmul(self, V: Tensor, chunk: int = MATMUL_CHUNK) -> Tensor:
        """``Theta_g V`` for an N x b block, without any N x N matrix.

        Column j: ``rowsum((A M_j) ⊙ D)`` with ``M_j = A^T diag(v_j) D``. The block is handled by two
        GEMMs per row chunk, broadcasting ``v_j`` over the narrower of A and D; cost ``4 N b p`` flops.
        Rows are chunked so the (rows x b p_A) temporaries stay cache-sized (``MATMUL_BUFFER`` numbers, one
        buffer reused by every chunk: measured 1.4x faster than 4M-number temporaries allocated per chunk,
        for b = 4 on the 4x256 net at N = 65,536, one thread).
        """
        A, D = self.A, self.D
        if A.shape[1] > D.shape[1]:  # broadcast over the narrower factor: (A,D) play symmetric roles
            A, D = D, A
        n, b = V.shape
        pa, pd = A.shape[1], D.shape[1]
        if pa == 1:  # Theta_g = diag(a) (D D^T) diag(a) = X X^T: two thin GEMMs on X = D * a, made once
            if self._single is None:
                X = D if bool((A == 1).all()) else (D * A).contiguous()  # a cut factor's A is ones: no copy
                # X^T kept contiguous on CPU unless it is big (X^T V from a transposed view is ~3x slower
                # there: bench_ntk.py --part topk); elsewhere a view (cuBLAS takes transposes as they are)
                small = X.numel() * X.element_size() <= SINGLE_COPY_BYTES
                Xt = X.T.contiguous() if X.device.type == "cpu" and small else X.T
                self._single = (X, Xt)
            X, Xt = self._single
            return X @ (Xt @ V)
        rows = max(256, min(chunk, n, MATMUL_BUFFER // max(1, b * pa)))
        M = torch.zeros(b * pa, pd, dtype=V.dtype, device=V.device)
        buf = torch.empty(rows, b, pa, dtype=V.dtype, device=V.device)
        for s in range(0, n, rows):
            r = min(rows, n - s)
            AV = torch.mul(V[s : s + r, :, None], A[s : s + r, None, :], out=buf[:r])
            if b * pa <= THIN_SPLIT and r % 2 == 0:
                # so thin a GEMM runs on one thread (the sum over rows is not split): two halves side by
                # side in one bmm use both (bench_ntk.py --part topk)
                h = r // 2
                M.add_(torch.bmm(AV.view(2, h, b * pa).transpose(1, 2), D[s : s + r].view(2, h, pd)).sum(0))
            else:
                M.addmm_(AV.view(r, b * pa).T, D[s : s + r])
        out = torch.empty(n, b, dtype=V.dtype, device=V.device)
        flat = buf.view(rows, b * pa)
        for s in range(0, n, rows):
            r = min(rows, n - s)
            DM = torch.mm(D[s : s + r], M.T, out=flat[:r]).view(r, b, pa)
            DM.mul_(A[s : s + r, None, :])
            torch.sum(DM, -1, out=out[s : s + r])
        return out

    def compressed(self) -> Factor:
        """The same kernel without the columns of A and D that are exactly zero on every point.

        Dead ReLU units (never active on the points) give zero columns in the next layer's A and in
        their own layer's D; they add nothing to ``A A^T`` or ``D D^T``, so dropping them is exact and
        saves their share of every matrix-free product (about 40% for a default-init 4x256 ReLU net).
        """

        def reduce(X: Tensor) -> Tensor:
            # a column is alive when its max or its min is nonzero (NaN counts as alive); with index_select,
            # 0.084 s against 0.105 s for (X != 0).any(0) and a boolean-mask copy (65,536 x 257, float32)
            alive = (X.amax(0) != 0) | (X.amin(0) != 0)
            if bool(alive.all()) or not bool(alive.any()):
                return X
            return X.index_select(1, alive.nonzero()[:, 0])

        return self.with_factors(reduce(self.A), reduce(self.D))

    def with_factors(self, A: Tensor, D: Tensor) -> Factor:
        """This group with other A and D (same index, name, kind, parameters and note)."""
        return Factor(index=self.index, name=self.name, kind=self.kind, A=A, D=D, parameters=self.parameters,
                      note=self.note)  # fmt: skip

    def lowrank(self, budget: float) -> LowRank:
        """A cheaper kernel within ``bound <= budget`` of this one in spectral norm: a sum of factors.

        Rotate A and D into the eigenvectors of their Grams (``A A^T = (A V)(A V)^T``, columns by
        decreasing eigenvalue). One side, Q, is split into column groups of ``CUT_GROUP``; group g keeps
        the top ``a_g`` directions of the other side, P (``a_g = 0``: the group is dropped). The dropped
        part of group g is ``E_g = (P_tail P_tail^T) ⊙ (Q_g Q_g^T)``, both PSD, so by Schur's bounds
        ``||E_g|| <= min(||P_tail||^2 max_n |q_g,n|^2, max_n |p_tail,n|^2 ||Q_g||^2)``, where
        ``||P_tail||^2`` is the largest dropped eigenvalue of ``P^T P``; ``bound`` is the sum over the
        groups. The ``a_g`` minimise the product's cost ``sum_g a_g |g|`` under ``bound <= budget``
        (Lagrangian bisection), and the side split is the cheaper one: a staircase, not a rectangle,
        since a group of weak Q directions needs few P directions (the 4x256 example's hidden layers at
        N = 65,536: 33,182 columns at bound 0.0132 with the budget ``lanczos_topk`` shares among the groups,
        39,313 at 0.0077 with it split evenly; the earlier rectangular cut kept 70,310 at 0.0066:
        ``bench_ntk.py --part topk``). By Weyl, every eigenvalue of the summed
        kernel moves by at most the summed bounds; the dropped parts are PSD, so the cheaper kernel is
        below this one (``Theta'_g <= Theta_g``). When A or D is a single column (a scalar-output head, a
        generic group), ``Theta_g = X X^T`` with ``X = A * D`` and X itself is cut: ``||Theta_g - Theta'_g||``
        = its largest dropped eigenvalue. ``lowrank_all`` cuts several factors within one shared budget.
        """
        return lowrank_all([self], budget)[0]

    def flops_kernel(self) -> float:
        """Flops of ``kernel()``: ``N (N + KERNEL_BLOCK) (p_A + p_D)`` (the lower block triangle of one GEMM per
        factor)."""
        n = self.points
        return float(n) * (n + KERNEL_BLOCK) * (self.A.shape[1] + self.D.shape[1])

    def flops_matmul(self, b: int = 1) -> float:
        """Flops of ``matmul()`` on b vectors: ``4 N b p``."""
        return 4.0 * self.points * b * self.feature_dim


def gram64(X: Tensor, block: int = 64, chunk: int = 4096) -> Tensor:
    """``X^T X`` in float64, its lower block triangle computed (column blocks of ``block``) and mirrored.

    Accumulated over row chunks of ``chunk``, each converted to float64 on its own: no N x p float64 copy
    of X (120 MB for a 65,536 x 232 factor; as fast as converting it whole once the allocator is tuned,
    ``bench_ntk.py --part topk``)."""
    p = X.shape[1]
    G = torch.zeros(p, p, dtype=torch.float64, device=X.device)
    for s in range(0, X.shape[0], chunk):
        add_lower(G, X[s : s + chunk].to(torch.float64), block)
    return mirror_lower(G, block)


@dataclass
class LowRank:
    """``Factor.lowrank``'s result: the cheaper kernel, a sum of factors, and the bound it incurred."""

    parts: list[Factor]
    #: ``||Theta_g - sum of the parts' kernels||_2 <= bound`` (0 when nothing was dropped).
    bound: float

    @property
    def feature_dim(self) -> int:
        return sum(f.feature_dim for f in self.parts)

    def matmul(self, V: Tensor, chunk: int = MATMUL_CHUNK) -> Tensor:
        """The summed kernel times an N x b block, part by part (``matmul_sum``)."""
        return matmul_sum(self.parts, V, chunk)

    def kernel(self) -> Tensor:
        """The summed kernel as an N x N matrix (``kernel_sum``; tests and small N only)."""
        return kernel_sum(self.parts)

    def flops_matmul(self, b: int = 1) -> float:
        return sum(f.flops_matmul(b) for f in self.parts)


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
    if k * u > 0.1:  # far beyond any width this runs on: recompute nothing, claim nothing cheaper
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

    def __init__(self, f: Factor):
        self.f = f
        self.tables: list[_StairTable] = []
        self.single: tuple[Tensor, Tensor, Tensor] | None = None  # X, its rotation V, bounds by columns kept
        pa, pd = f.A.shape[1], f.D.shape[1]
        if min(pa, pd) == 1:  # Theta_g = X X^T with X = A * D: cut X itself
            X = f.A * f.D
            w, V = _rotated_basis(X)
            self.single = (X, V, torch.cat([w, w.new_zeros(1)]))  # keeping j columns: bound w[j], j = 0..p
        elif min(pa, pd) > 4:
            wa, Va = _rotated_basis(f.A)
            wd, Vd = _rotated_basis(f.D)
            Ar, Dr = _rows_mm(f.A, Va.to(f.A.dtype)), _rows_mm(f.D, Vd.to(f.D.dtype))
            self.tables = [_stair_table(Ar, wa, Dr, wd), _stair_table(Dr, wd, Ar, wa)]

    def pick(self, lam: float) -> tuple[float, float, Any]:
        """(cost, bound, choice) minimising ``cost + lam bound``; cost in Khatri-Rao columns (flops / 4 N b)."""
        if self.single is not None:
            hb = self.single[2]
            j = (
                int(torch.argmin(torch.arange(hb.numel(), dtype=torch.float64, device=hb.device)[1:] + lam * hb[1:]))
                + 1
            )
            return float(j), float(hb[j]), j  # never N x 0: the top direction stays
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


def lowrank_all(factors: list[Factor], budget: float) -> list[LowRank]:
    """Every factor cut as ``Factor.lowrank`` cuts one, within one budget shared by all: the bounds sum to at
    most ``budget``.

    One Lagrange multiplier for all of them, so each column kept anywhere buys the same drop in the bound.
    Splitting the budget evenly instead left the uncut groups' shares (an inlet of 3 columns, say) unused and
    gave every layer the same share whatever its spectrum: on the 4x256 example at N = 65,536 and
    ``lanczos_topk``'s budget 0.0134 the hidden layers kept 39,313 columns that way (bound 0.0092 in all),
    33,182 shared (bound 0.0132): one block product 0.93x (``bench_ntk.py --part topk``)."""
    if not factors:
        return []
    if not budget > 0:  # 0, negative or NaN: nothing is cut
        return [LowRank(parts=[f], bound=0.0) for f in factors]
    cands = [_Candidates(f) for f in factors]
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


def linear_factors(model: Any, x: Tensor, chunk: int = CHUNK, names: list[str] | None = None) -> list[Factor]:
    """A and D of every exact-factor linear layer of ``model`` (eval mode) on the points ``x`` (N x d).

    ``A`` = the layer's recorded input with a ones column for the bias (N x (d_in + 1)), ``D`` =
    ``[d f_1 / d h_k | ... | d f_C / d h_k]`` (N x C d_out). One hooked forward pass and C backward
    passes per chunk of ``chunk`` points; chunking changes nothing but memory (the tests check
    chunked == unchunked).
    """
    ad = as_adapter(model, names=names)
    ks = ad.exact_layers
    n = x.shape[0]
    # written into by row chunk: no per-chunk lists to concatenate, no second copy for the bias column
    As: dict[int, Tensor] = {}
    Ds: dict[int, Tensor] = {}
    C = ad.out_features
    for s in range(0, n, chunk):
        xc = x[s : s + chunk]
        with torch.enable_grad():
            rec = ad.record(xc)
            if not bool(torch.isfinite(rec.out).all()):
                raise InrdiagError("the model's output is not finite (NaN/Inf) on the grid; check the weights")
            if ks and not rec.out.requires_grad:
                raise InrdiagError("the model's output does not depend on any parameter that requires grad")
            hs = [rec.outputs[k] for k in ks]
            per_c: list[list[Tensor]] = []
            for c in range(C):
                g = (
                    torch.autograd.grad(rec.out[:, c].sum(), hs, retain_graph=c < C - 1, allow_unused=True)
                    if hs
                    else ()
                )
                per_c.append([torch.zeros_like(h) if gi is None else gi for gi, h in zip(g, hs)])
        e = s + xc.shape[0]
        for i, k in enumerate(ks):
            a, h = rec.inputs[k], hs[i]
            if k not in As:
                bias = 1 if ad.layers[k].has_bias else 0
                As[k] = torch.empty(n, a.shape[1] + bias, dtype=a.dtype, device=a.device)
                if bias:
                    As[k][:, -1] = 1
                Ds[k] = torch.empty(n, C * h.shape[1], dtype=h.dtype, device=h.device)
            As[k][s:e, : a.shape[1]] = a
            for c in range(C):
                Ds[k][s:e, c * h.shape[1] : (c + 1) * h.shape[1]] = per_c[c][i]
    factors: list[Factor] = []
    for k in ks:
        layer = ad.layers[k]
        nparam = sum(p.numel() for p in layer.module.parameters())
        factors.append(Factor(index=len(factors), name=layer.name, kind="linear", A=As[k], D=Ds[k], parameters=nparam))
    return factors


@dataclass
class GenericGroup:
    """Parameters that go the generic torch.func way: a display name, parameter names, and why."""

    name: str
    params: list[str]
    reason: str


def generic_groups(model: Any) -> list[GenericGroup]:
    """Every parameter not in an exact-factor linear layer, grouped by owning module (in parameter order).

    Parameters of linear layers never called by the forward are left out: their NTK term is exactly 0.
    """
    ad = as_adapter(model)
    paths = {layer.path: layer for layer in ad.layers}
    exact = {ad.layers[k].path for k in ad.exact_layers}
    called = set(paths)
    uncalled = {p for p, m in ad.module.named_modules() if isinstance(m, torch.nn.Linear) and p not in called}
    modules = dict(ad.module.named_modules())
    groups: dict[str, GenericGroup] = {}
    for name, _ in ad.module.named_parameters():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner in exact or owner in uncalled:
            continue
        if owner in paths:
            layer = paths[owner]
            key, why = layer.name, layer.reason
        else:
            key = owner or name
            mod = modules.get(owner)
            why = f"{type(mod).__name__} (not an nn.Linear)" if owner else "a parameter of the root module"
        groups.setdefault(key, GenericGroup(name=key, params=[], reason=why)).params.append(name)
    return list(groups.values())


def per_sample_jacobian(model: Any, x: Tensor, names: list[str], chunk: int = 1024) -> Tensor:
    """Per-sample Jacobian of all output channels w.r.t. the named parameters: N x (C p).

    The generic path: ``torch.func.vmap(jacrev(f))`` over samples, ``chunk`` samples at a time
    (memory O(chunk C p)); runs on whatever device the model is on. A complex parameter w is
    differentiated as the real pair ``(Re w, Im w)`` (``view_as_real``; torch.func refuses complex
    inputs), so it counts 2 real parameters per entry.
    """
    from torch.func import functional_call, jacrev, vmap

    module = as_adapter(model).module if not isinstance(model, torch.nn.Module) else model
    params = dict(module.named_parameters())
    fixed = {k: v.detach() for k, v in params.items() if k not in names}
    fixed.update(dict(module.named_buffers()))
    cplx = {k for k in names if params[k].is_complex()}
    wrt = {k: (torch.view_as_real(params[k].detach()) if k in cplx else params[k].detach()) for k in names}

    def f(p: dict[str, Tensor], x1: Tensor) -> Tensor:
        p = {k: (torch.view_as_complex(v) if k in cplx else v) for k, v in p.items()}
        return functional_call(module, {**fixed, **p}, (x1[None],))[0]

    jf = vmap(jacrev(f), in_dims=(None, 0))
    rows = []
    for s in range(0, x.shape[0], chunk):
        jac = jf(wrt, x[s : s + chunk])
        n, C = jac[names[0]].shape[:2]
        # columns ordered channel-major: [channel 0: all params | channel 1: ...]
        rows.append(torch.cat([jac[k].reshape(n, C, -1) for k in names], dim=2).reshape(n, -1))
    return torch.cat(rows)


def layer_factors(model: Any, x: Tensor, chunk: int = CHUNK, names: list[str] | None = None) -> list[Factor]:
    """Every parameter group's factor: exact-factor linear layers first (call order), then the generic
    groups (see ``generic_groups``); ``Theta = sum`` of their kernels, exactly."""
    ad = as_adapter(model, names=names)
    factors = linear_factors(ad, x, chunk)
    params = dict(ad.module.named_parameters())
    for grp in generic_groups(ad):
        G = per_sample_jacobian(ad.module, x, grp.params, chunk=max(1, min(chunk, 1024)))
        ones = torch.ones(G.shape[0], 1, dtype=G.dtype, device=G.device)
        nparam = sum(params[p].numel() * (2 if params[p].is_complex() else 1) for p in grp.params)
        factors.append(Factor(index=len(factors), name=grp.name, kind="generic", A=G, D=ones, parameters=nparam,
                              note=grp.reason))  # fmt: skip
    return factors


def kernel_sum(factors: list[Factor]) -> Tensor:
    """The full ``Theta = sum_g Theta_g`` (N x N)."""
    if not factors:
        raise ValueError("kernel_sum of no factors")
    out = factors[0].kernel()
    for f in factors[1:]:
        f.kernel(out)
    return out


def matmul_sum(factors: list[Factor], V: Tensor, chunk: int = MATMUL_CHUNK) -> Tensor:
    """``Theta V = sum_g Theta_g V`` (matrix-free)."""
    if not factors:
        raise ValueError("matmul_sum of no factors")
    out = factors[0].matmul(V, chunk)
    for f in factors[1:]:
        out.add_(f.matmul(V, chunk))
    return out
