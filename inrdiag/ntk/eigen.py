"""Eigenvalues of a symmetric positive semi-definite operator given only its block product.

Both solvers grow one block Krylov space (block Lanczos with full reorthogonalisation) and keep

- the basis ``Q`` (N x m, float64) and the products ``W = Theta Q`` (computed in ``compute_dtype``,
  e.g. float32, stored in float64),
- the Rayleigh-Ritz matrix ``H = Q^T W``, extended by one block column per step (O(N m b); never
  recomputed whole), and
- the Lanczos relation ``W - Q H = R S^T``: ``R`` (N x b) the residual block of the last step, ``S``
  (m x b) its coefficients (rotated along at a thick restart).

So the residual of every Ritz pair ``(theta, Q y)`` is ``||Theta Q y - theta Q y|| = ||R S^T y||``,
O(b^2) per pair from the b x b Gram ``R^T R``: no product and no N x m operation per step. The
residuals a solver reports are recomputed explicitly from the stored products once, at the end
(``||W y - theta Q y||``), so rounding in the relation never reaches a reported number.

For a symmetric matrix an eigenvalue lies within ``||r||`` of every Ritz value ``theta`` (within
``||r||^2 / gap`` once the pair is isolated), and by Cauchy interlacing ``theta_i <= lambda_i``.

- ``topk_eigh``: the top k pairs, with thick restarts (the best k + b Ritz vectors kept, Krylov-Schur);
  stops when every pair has ``||Theta u - theta u|| <= tol * theta``. Summands of the operator given as
  ``parts`` can be tracked: their products are kept, and the top Ritz pair of each on the final basis
  comes for free (``TopK.parts``).
- ``krylov_spectrum``: the top of the spectrum from one growing space, with what it proves about the
  rest (effective-rank and numerical-rank bounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..seeds import check_seed
from .dense import dense_eigh

#: ``V -> Theta V`` for an N x b block.
MatMul = Callable[[Tensor], Tensor]

#: A Ritz pair whose residual is below this fraction of its value is "converged": only those carry the
#: reading ``lambda_i in [theta_i, theta_i + ||r_i||]`` (assuming the Krylov space missed no eigenvalue).
CONVERGED = 0.01


@dataclass(frozen=True)
class Bounds:
    """A closed interval [lower, upper] of real numbers."""

    lower: float
    upper: float

    @property
    def middle(self) -> float:
        return 0.5 * (self.lower + self.upper)

    def to_list(self) -> list[float]:
        return [self.lower, self.upper]


@dataclass(frozen=True)
class RankBounds:
    """A closed interval [lower, upper] of counts."""

    lower: int
    upper: int

    @property
    def pinned(self) -> bool:
        return self.lower == self.upper

    def to_list(self) -> list[int]:
        return [self.lower, self.upper]


@dataclass
class PartRitz:
    """The top Ritz pair of one tracked summand ``Theta_g`` on a solver's final basis."""

    value: float
    #: ``||Theta_g u - theta u|| / theta`` (explicit, from the stored products of that summand).
    relative_residual: float
    #: The unit Ritz vector u (N).
    vector: Tensor


@dataclass
class TopK:
    """Result of ``topk_eigh``: eigenvalues descending, unit eigenvectors (N x k), and the check."""

    values: Tensor
    vectors: Tensor
    #: ``||Theta u_i - theta_i u_i|| / theta_i`` per pair, computed explicitly from the stored products.
    relative_residuals: list[float]
    #: Number of single-vector products spent (block steps x block size).
    products: int
    converged: bool
    tol: float
    block: int
    #: The top Ritz pair of every tracked summand (``topk_eigh(parts=..., track=...)``), by index.
    parts: dict[int, PartRitz] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_relative_residual": max(self.relative_residuals) if self.relative_residuals else 0.0,
            "relative_residuals": self.relative_residuals,
            "products": self.products,
            "converged": self.converged,
            "tol": self.tol,
            "block": self.block,
        }


class _BlockKrylov:
    """A block Krylov basis of a PSD operator with its products, ``H = Q^T W`` and ``W - Q H = R S^T``."""

    def __init__(
        self,
        matmul: MatMul | None,
        parts: Sequence[MatMul],
        track: Sequence[int],
        n: int,
        capacity: int,
        dtype: torch.dtype,
        compute_dtype: torch.dtype,
        device: torch.device | str | None,
        gen: torch.Generator,
    ) -> None:
        if matmul is None and not parts:
            raise ValueError("give matmul or parts")
        self.matmul, self.parts, self.track = matmul, list(parts), list(track)
        self.n, self.dtype, self.compute_dtype, self.device, self.gen = n, dtype, compute_dtype, device, gen
        capacity = min(capacity, n)
        # the basis and its products stored transposed (capacity x N): the first m vectors, which every step
        # reads, are one contiguous block, and ``Q^T X`` and ``Q Y`` run as row-major GEMMs (``_qtx``, ``_qy``):
        # 0.78x the time on column slices of an N x capacity matrix (65,536 x 80 of 100, float64,
        # ``bench_ntk.py --part topk``; 0.54-0.56x in one-off timings); the solver's own work around 80
        # products of a diagonal operator took 0.98 s against 1.90 s (a one-off timing)
        self.Qt = torch.empty(capacity, n, dtype=dtype, device=device)
        self.Wt = torch.empty(capacity, n, dtype=dtype, device=device)
        self.Wpt = [torch.empty(capacity, n, dtype=dtype, device=device) for _ in self.track]
        # the small matrices (H, S, Ritz vectors) are float64 whatever the basis dtype
        self.H = torch.zeros(capacity, capacity, dtype=torch.float64, device=device)
        self.R = torch.zeros(n, 0, dtype=dtype, device=device)
        self.S = torch.zeros(0, 0, dtype=torch.float64, device=device)
        self.m = 0
        self.products = 0

    @property
    def capacity(self) -> int:
        return int(self.Qt.shape[0])

    def random(self, b: int) -> Tensor:
        return torch.randn(self.n, b, dtype=self.dtype, device=self.device, generator=self.gen)

    def _apply(self, X: Tensor) -> tuple[Tensor, list[Tensor]]:
        Xc = X.to(self.compute_dtype)
        if not self.parts:
            assert self.matmul is not None
            return self.matmul(Xc).to(self.dtype), []
        outs = [p(Xc) for p in self.parts]
        total = outs[0].to(self.dtype)
        for o in outs[1:]:
            total.add_(o.to(self.dtype))
        return total, [outs[i].to(self.dtype) for i in self.track]

    @staticmethod
    def _qtx(Mt: Tensor, X: Tensor) -> Tensor:
        """``M^T X`` for M stored transposed (``Mt``: its first columns as rows)."""
        return Mt @ X

    @staticmethod
    def _qy(Mt: Tensor, Y: Tensor) -> Tensor:
        """``M Y`` (N x k, contiguous) for M stored transposed: ``(Y^T M^T)^T``."""
        return (Y.T @ Mt).T.contiguous()

    def _project_out(self, X: Tensor) -> Tensor:
        if self.m:
            Qt = self.Qt[: self.m]
            X = X - self._qy(Qt, self._qtx(Qt, X))
        return X

    def _orthonormal(self, X: Tensor, projected: bool = False) -> Tensor:
        """An orthonormal block spanning X outside span(Q); columns that vanish are replaced by random ones.

        Classical Gram-Schmidt twice ("twice is enough"): a residual block (``projected``: already one pass,
        ``R = W X - Q H``) gets one more pass, anything else two; then QR, and one more pass and QR when
        a column lost more than 99% of its norm to the previous columns of the block."""
        b = X.shape[1]
        passes = 1 if projected else 2
        for _ in range(4):
            scale = max(float(X.norm(dim=0).max()), 1e-300) if X.numel() else 1.0
            for _ in range(passes):
                X = self._project_out(X)
            cols = X.norm(dim=0)
            X, Rr = torch.linalg.qr(X)
            d = Rr.diagonal().abs()
            bad = d <= 1e-10 * scale
            if not bool(bad.any()):
                if bool((d < 1e-2 * cols).any()):
                    X, _ = torch.linalg.qr(self._project_out(X))
                return X[:, :b]
            X = X.clone()
            X[:, bad] = self.random(int(bad.sum()))
            passes = 2
        return X[:, :b]

    def add(self, X0: Tensor, projected: bool = False) -> int:
        """Append the orthonormalised block X0 and its product; returns the number of columns added."""
        m = self.m
        nb = min(X0.shape[1], self.capacity - m)
        if nb <= 0:
            return 0
        X = self._orthonormal(X0[:, :nb] if X0.shape[1] > nb else X0, projected)[:, :nb]
        WX, tracked = self._apply(X)
        self.products += nb
        self.Qt[m : m + nb] = X.T
        self.Wt[m : m + nb] = WX.T
        for Wpt, P in zip(self.Wpt, tracked):
            Wpt[m : m + nb] = P.T
        Qn = self.Qt[: m + nb]
        Hc = self._qtx(Qn, WX)  # (m + nb) x nb: the new block column of H = Q^T W
        Hc[m:] = 0.5 * (Hc[m:] + Hc[m:].T)
        self.R = WX - self._qy(Qn, Hc)  # the old columns' residuals now lie in span(X): exactly, they are 0
        Hc64 = Hc.to(torch.float64)
        self.H[: m + nb, m : m + nb] = Hc64
        self.H[m : m + nb, :m] = Hc64[:m].T
        self.S = torch.zeros(m + nb, nb, dtype=torch.float64, device=self.device)
        self.S[m:] = torch.eye(nb, dtype=torch.float64, device=self.device)
        self.m = m + nb
        return nb

    def extend(self, b: int) -> int:
        """Append the next block: the residual block (its b main directions when it is wider; random at the
        start); returns the number of columns added."""
        if self.m == 0 or self.R.shape[1] == 0:
            return self.add(self.random(b))
        if self.R.shape[1] <= b:
            return self.add(self.R, projected=True)
        Z = dense_eigh(self._gram(self.R)).vectors
        return self.add(self.R @ Z[:, -b:].to(self.dtype), projected=True)

    @staticmethod
    def _gram(X: Tensor) -> Tensor:
        X = X.to(torch.float64)
        return X.T @ X

    def ritz(self) -> tuple[Tensor, Tensor]:
        """Ritz values (descending) and coefficient vectors of ``H``."""
        H = self.H[: self.m, : self.m]
        e = dense_eigh(0.5 * (H + H.T))
        return e.values.flip(0), e.vectors.flip(1)

    def residual_norms(self, Y: Tensor) -> Tensor:
        """``||R S^T y||`` for every column y of Y: the residual norms the Lanczos relation gives."""
        Z = self.S.T @ Y  # b x j
        C = self._gram(self.R)
        return (Z * (C @ Z)).sum(0).clamp_min(0).sqrt()

    def explicit(self, Y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Ritz vectors ``U = Q Y`` and their residual norms ``||W y - theta Q y||``, from the stored products."""
        Yb = Y.to(self.dtype)
        U = self._qy(self.Qt[: self.m], Yb)
        R = self._qy(self.Wt[: self.m], Yb) - U * theta.to(self.dtype)
        return U, R.norm(dim=0, dtype=torch.float64)

    def restart(self, Y: Tensor, theta: Tensor) -> None:
        """Keep only the Ritz vectors ``Q Y`` (thick restart): H becomes diag(theta), S rotates with them."""
        keep = Y.shape[1]
        m = self.m
        Yb = Y.to(self.dtype)
        for Mt in (self.Qt, self.Wt, *self.Wpt):
            Mt[:keep] = Yb.T @ Mt[:m]  # the product is a new tensor: no overlap with what it is read from
        self.H.zero_()
        self.H[:keep, :keep] = torch.diag(theta)
        self.S = Y.T @ self.S
        self.m = keep

    def part_ritz(self, j: int) -> PartRitz:
        """The top Ritz pair of the tracked summand ``track[j]`` on the current basis (explicit residual)."""
        Qt, Pt = self.Qt[: self.m], self.Wpt[j][: self.m]
        Hp = (Qt @ Pt.T).to(torch.float64)
        e = dense_eigh(0.5 * (Hp + Hp.T))
        theta, y = float(e.values[-1]), e.vectors[:, -1:].to(self.dtype)
        u = self._qy(Qt, y)
        r = float((self._qy(Pt, y) - u * theta).norm(dtype=torch.float64))
        return PartRitz(value=theta, relative_residual=r / theta if theta > 0 else math.inf, vector=u[:, 0])


def topk_eigh(
    matmul: MatMul | None,
    n: int,
    k: int,
    *,
    parts: Sequence[MatMul] = (),
    track: Sequence[int] = (),
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    compute_dtype: torch.dtype | None = None,
    block: int = 8,
    tol: float = 1e-8,
    max_basis: int | None = None,
    max_products: int | None = None,
    seed: int = 0,
    start: Tensor | None = None,
) -> TopK:
    """Largest ``k`` eigenpairs of the PSD operator ``V -> matmul(V)`` (N x b -> N x b), or of the sum of
    ``parts`` (then ``matmul`` may be None, and the summands listed in ``track`` get their own top Ritz
    pair on the final basis, ``TopK.parts``).

    The basis is kept in ``dtype`` (default float64); products run in ``compute_dtype`` (e.g. the
    model's float32, which halves their time; the residual check then measures the error that
    introduces). ``max_basis`` (default ``max(3k, k + 6 b)``) bounds memory at ``2 N max_basis``
    numbers; past it the method restarts from the ``k + b`` best Ritz vectors. ``start``: columns of the
    first block (e.g. a previous solve's vectors), the rest random.
    """
    dtype = dtype or torch.float64
    compute_dtype = compute_dtype or dtype
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    block = max(1, min(block, n))
    max_basis = min(n, max_basis or max(3 * k, k + 6 * block))
    max_basis = max(max_basis, min(n, k + block))
    max_products = max_products or max(20 * k, 500)
    gen = torch.Generator(device=device).manual_seed(check_seed(seed, "seed"))
    kr = _BlockKrylov(matmul, parts, track, n, max_basis + block, dtype, compute_dtype, device, gen)
    X0 = kr.random(block)
    if start is not None:
        s = start.reshape(n, -1)[:, :block].to(dtype=dtype, device=X0.device)
        X0[:, : s.shape[1]] = s
    kr.add(X0)
    best, stalled, rechecks = float("inf"), 0, 0
    while True:
        theta, Y = kr.ritz()
        kk = min(k, kr.m)
        scale = theta[:kk].abs().clamp_min(torch.finfo(dtype).tiny)
        est = float((kr.residual_norms(Y[:, :kk]) / scale).max())
        done = kk == k and est <= tol
        # Stagnation: with float32 products the residuals reach a floor (~1e-4 of theta); stop when the
        # worst residual has not improved by 10% over 8 block steps instead of spinning to max_products.
        if kk == k:
            stalled = 0 if est < 0.9 * best else stalled + 1
            best = min(best, est)
        full = kr.m >= n
        if done or full or kr.products >= max_products or stalled >= 8:
            U, rn = kr.explicit(Y[:, :kk], theta[:kk])
            rel = (rn / scale).tolist()
            if done and max(rel) > tol and rechecks < 3 and not full and kr.products < max_products:
                rechecks += 1  # the relation drifted from the products: trust only explicit checks; go on
            else:
                parts_out = {t: kr.part_ritz(j) for j, t in enumerate(kr.track)}
                ok = bool((done and max(rel) <= tol) or full)
                return TopK(values=theta[:kk], vectors=U, relative_residuals=rel, products=kr.products, converged=ok,
                            tol=tol, block=block, parts=parts_out)  # fmt: skip
        if kr.m + block > max_basis:  # thick restart: keep the best k + b Ritz vectors
            keep = min(kr.m, k + block)
            kr.restart(Y[:, :keep], theta[:keep])
        if kr.extend(min(block, n - kr.m)) == 0:
            raise RuntimeError("block Lanczos: no room to extend the basis")  # unreachable: m < n here


@dataclass
class PartialSpectrum:
    """Rayleigh-Ritz values of a PSD matrix on a block Krylov space, with what they prove.

    Interlacing (Cauchy) gives ``theta_i <= lambda_i`` for every Ritz value, whatever the
    convergence; with the exact trace ``T = sum lambda`` that bounds the effective rank from above
    (the unexplained mass ``T - sum theta`` water-filled over the smallest values: most entropy),
    unconditionally. The lower bound puts that mass as high as the residual intervals
    ``lambda_i <= theta_i + ||r_i||`` allow, which holds when the Krylov space missed no eigenvalue
    (a random start block; the same assumption as for the numerical rank).
    """

    #: Every Ritz value, descending (the first ``len(residuals)`` are the converged prefix).
    values: list[float]
    #: ``||K u_i - theta_i u_i||`` of the converged prefix (residual under ``CONVERGED`` of the value),
    #: explicit, absolute.
    radii: list[float]
    trace: float
    effective_rank_bounds: Bounds
    #: Numerical rank ``#{lambda_i > tol lambda_1}``: pairs whose residual interval lies above the
    #: threshold .. pairs whose interval reaches it (equal when no interval straddles it), assuming
    #: the Krylov space missed no eigenvalue above the threshold (a random start block).
    numerical_rank_bounds: RankBounds
    dim: int
    #: The goals were met: effective rank within ``width``, numerical rank pinned, enough converged pairs.
    converged: bool = True
    #: Single-vector products spent.
    products: int = 0

    @property
    def effective_rank(self) -> float:
        return self.effective_rank_bounds.middle

    @property
    def converged_values(self) -> list[float]:
        """The converged prefix of ``values``: each within ``radii[i]`` above (``lambda_i >= theta_i`` always)."""
        return self.values[: len(self.radii)]

    @property
    def residuals(self) -> list[float]:
        """``radii`` relative to the top Ritz value."""
        lam1 = self.values[0] if self.values else 0.0
        return [r / max(lam1, 1e-300) for r in self.radii]


def _entropy(p: list[float]) -> float:
    return -sum(v * math.log(v) for v in p if v > 0)


def effective_rank_bounds(theta: list[float], n: int, trace: float, radii: list[float] | None = None) -> Bounds:
    """Bounds on ``exp(H(lambda / T))`` over every PSD spectrum of size n with ``lambda_i >= theta_i``
    (theta descending) and ``sum lambda = T``.

    Most entropy (upper bound, unconditional): the smallest values raised to a common level L,
    ``lambda_i = max(theta_i, L)``. Least entropy (lower bound): the excess ``T - sum theta`` as
    concentrated as the constraints allow; without ``radii`` all of it on lambda_1; with ``radii``
    (``lambda_i <= theta_i + radii[i]`` for the first ``len(radii)`` values, the residual bound when
    no eigenvalue was missed) greedily from the top, every later value capped at the last cap.
    """
    th = [max(float(v), 0.0) for v in theta][:n]
    if trace <= 0:
        return Bounds(lower=0.0, upper=0.0)
    excess = max(trace - sum(th), 0.0)
    lo_vals = list(th) + [0.0] * (n - len(th))
    if not radii:
        lo_vals[0] += excess
    else:
        cap = th[len(radii) - 1] + radii[-1]
        for i in range(n):
            if excess <= 0:
                break
            room = (th[i] + radii[i] if i < len(radii) else cap) - lo_vals[i]
            add = min(max(room, 0.0), excess)
            lo_vals[i] += add
            excess -= add
        lo_vals[0] += excess  # whatever the caps could not hold
    h_lo = _entropy([v / trace for v in lo_vals])
    # water-filling: the level L with sum_i max(v_i, L) = T over the n values (ascending v; with L
    # between v_{i-1} and v_i the i smallest are raised: i L + sum_{j >= i} v_j = T)
    vals = sorted(th + [0.0] * (n - len(th)))
    suffix = [0.0] * (n + 1)
    for j in range(n - 1, -1, -1):
        suffix[j] = suffix[j + 1] + vals[j]
    level = 0.0
    for i in range(1, n + 1):
        cand = (trace - suffix[i]) / i
        if cand >= vals[i - 1] and (i == n or cand <= vals[i]):
            level = cand
            break
    hi_vals = [max(v, level) for v in vals]
    s = sum(hi_vals)
    h_hi = _entropy([v / s for v in hi_vals]) if s > 0 else 0.0
    return Bounds(lower=math.exp(h_lo), upper=math.exp(max(h_hi, h_lo)))


def _prefix(vals: list[float], rad: list[float]) -> int:
    """Length of the converged prefix: pairs whose residual is under ``CONVERGED`` of their value."""
    top = next((i for i, (v, r) in enumerate(zip(vals, rad)) if not r <= CONVERGED * v), len(vals))
    return max(top, 1)


def _rank_bounds(vals: list[float], rad: list[float], top: int, n: int, tol: float) -> RankBounds:
    """``#{lambda_i > tol lambda_1}`` from the residual intervals of the converged prefix.

    lambda_1 lies in [theta_1, theta_1 + r_1]: the threshold in [tol theta_1, tol (theta_1 + r_1)]. A pair
    counts surely when theta_i - r_i is above the top of that range, surely not when theta_i + r_i is
    below its bottom; past the prefix every lambda_i <= theta_top + r_top."""
    lam1 = vals[0] if vals else 0.0
    t_lo, t_hi = tol * lam1, tol * (lam1 + rad[0])
    lo = sum(1 for i in range(top) if vals[i] - rad[i] > t_hi)
    hi = sum(1 for i in range(top) if vals[i] + rad[i] > t_lo)
    if vals[top - 1] + rad[top - 1] > t_lo:
        hi = n
    return RankBounds(lower=lo, upper=hi)


def _goals(bounds: Bounds, nr: RankBounds, vals: list[float], top: int, width: float, want: int,
           floor: float) -> bool:  # fmt: skip
    enough = top >= want or (top < len(vals) and vals[top] < floor * vals[0])
    return bounds.upper - bounds.lower <= width * bounds.lower and nr.pinned and enough


def _hopeless(vals: list[float], tol: float, spread: float, m: int, last: tuple[int, float] | None, max_dim: int,
              width: float) -> bool:  # fmt: skip
    """``krylov_spectrum``'s early stop: the goals look out of reach by ``max_dim`` (see its ``give_up``)."""
    above = sum(1 for v in vals if v > tol * vals[0]) if vals else 0
    if 2 * above > max_dim:
        return True
    if last is None or m >= max_dim or not math.isfinite(spread):
        return False
    m0, s0 = last
    if not (math.isfinite(s0) and s0 > spread > 0):
        return False  # no progress measured yet: no extrapolation
    alpha = math.log(s0 / spread) / math.log(m / m0)
    return spread * (max_dim / m) ** (-alpha) > 1.5 * width


def krylov_spectrum(
    matmul: MatMul,
    n: int,
    trace: float,
    *,
    tol: float = 1e-3,
    width: float = 0.01,
    dim: int = 256,
    max_dim: int | None = None,
    step: int | None = None,
    block: int = 32,
    min_converged: int = 1,
    floor: float = 0.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    compute_dtype: torch.dtype | None = None,
    seed: int = 0,
    give_up: bool = True,
) -> PartialSpectrum:
    """Top of the spectrum of the PSD operator ``V -> matmul(V)`` from one block Krylov space, grown
    until the effective-rank bounds are within ``width`` (relative), the numerical rank at ``tol`` is
    pinned and at least ``min_converged`` Ritz pairs are converged (or the first unconverged Ritz value
    is below ``floor * theta_1``: what the products' precision cannot resolve), or ``max_dim`` (default
    n / 2) is reached (then ``converged`` is False). The goals are checked at ``dim``, then every ``step``
    columns (default: a block) or a quarter of the dimension, whichever is more. Cost: the products plus
    O(N m^2) for the basis and O(m^3) per check: far less than a full eigensolve when the spectrum decays
    (an NTK's does).

    ``give_up``: stop early, unconverged, when the checks say ``max_dim`` will not be enough (a flat
    spectrum, e.g. a SIREN's): more Ritz values above ``tol theta_1`` than half of ``max_dim`` (pinning a
    rank r takes a space well past r), or the effective-rank width, extrapolated as a power of the
    dimension from the last two checks, still above 1.5 ``width`` at ``max_dim``. Only the time
    depends on it: an unconverged result sends the caller to a dense eigensolve.
    """
    dtype = dtype or torch.float64
    compute_dtype = compute_dtype or dtype
    max_dim = min(n, max_dim or max(dim, n // 2))
    block = max(1, min(block, n))
    step = max(block, step or block)
    gen = torch.Generator(device=device).manual_seed(check_seed(seed, "seed"))
    kr = _BlockKrylov(matmul, (), (), n, max_dim, dtype, compute_dtype, device, gen)
    target = min(dim, max_dim)
    last: tuple[int, float] | None = None
    while True:
        while kr.m < target:
            if kr.extend(block) == 0:
                break
        theta, Y = kr.ritz()
        vals = theta.clamp_min(0).tolist()
        rad = kr.residual_norms(Y).tolist()
        top = _prefix(vals, rad)
        bounds = effective_rank_bounds(vals, n, trace, rad[:top])
        nr = _rank_bounds(vals, rad, top, n, tol)
        good = _goals(bounds, nr, vals, top, width, min(min_converged, n), floor)
        spread = (bounds.upper - bounds.lower) / bounds.lower if bounds.lower > 0 else math.inf
        hopeless = give_up and not good and _hopeless(vals, tol, spread, kr.m, last, max_dim, width)
        if good or kr.m >= max_dim or hopeless:
            # radii from the relation: the same numbers as ||W y - theta Q y|| up to float64 rounding (both are
            # residuals of the computed products; tests/test_ntk.py checks the two agree), at no N x m cost
            return PartialSpectrum(values=vals, radii=rad[:top], trace=trace, effective_rank_bounds=bounds,
                                   numerical_rank_bounds=nr, dim=kr.m, converged=good, products=kr.products)  # fmt: skip
        last = (kr.m, spread)
        target = min(max_dim, kr.m + max(step, kr.m // 4))
