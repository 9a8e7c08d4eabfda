"""Top-k eigenpairs of a symmetric positive semi-definite operator given only its block product.

Block Lanczos with full reorthogonalisation and thick restarts (a block Krylov-Schur in spirit):
the basis ``Q`` (N x m, float64) and ``W = Theta Q`` are both kept, so the Rayleigh-Ritz matrix
``H = Q^T W`` and the residuals ``R = W Y - Q Y diag(theta)`` of the Ritz pairs are exact — the
accuracy check costs no extra product. Each step multiplies a block of ``b`` vectors at once,
which turns the matrix-free product into larger GEMMs.

Stopping rule: every one of the top k Ritz pairs has ``||Theta u - theta u|| <= tol * theta``.
For a symmetric matrix an eigenvalue lies within ``||r||`` of every Ritz value ``theta`` (and
within ``||r||^2 / gap`` once the pair is isolated), so ``tol`` bounds the relative eigenvalue
error from above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class TopK:
    """Result of ``topk_eigh``: eigenvalues descending, unit eigenvectors (N x k), and the check."""

    values: Any
    vectors: Any
    #: ``||Theta u_i - theta_i u_i|| / theta_i`` per pair, computed from stored products (exact).
    relative_residuals: list[float]
    #: Number of single-vector products spent (block steps x block size).
    products: int
    converged: bool
    tol: float
    block: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_relative_residual": max(self.relative_residuals) if self.relative_residuals else 0.0,
            "relative_residuals": self.relative_residuals,
            "products": self.products,
            "converged": self.converged,
            "tol": self.tol,
            "block": self.block,
        }


def _orth_against(Q, X):
    """Remove the span of Q's columns from X twice (classical Gram-Schmidt, reorthogonalised)."""
    if Q is not None and Q.shape[1]:
        for _ in range(2):
            X = X - Q @ (Q.T @ X)
    return X


def _new_block(Q, X, gen):
    """Orthonormal block spanning X outside span(Q); columns that vanished are replaced by random ones."""
    import torch

    X = _orth_against(Q, X)
    b = X.shape[1]
    norms0 = X.norm(dim=0)
    for _ in range(3):
        X, R = torch.linalg.qr(X)
        bad = R.diagonal().abs() <= 1e-10 * max(float(norms0.max()), 1e-300)
        if not bool(bad.any()):
            break
        fresh = torch.randn(X.shape[0], int(bad.sum()), dtype=X.dtype, device=X.device, generator=gen)
        X = X.clone()
        X[:, bad] = fresh
        X = _orth_against(Q, X)
        norms0 = X.norm(dim=0)
    return X[:, :b]


def topk_eigh(
    matmul: Callable[[Any], Any],
    n: int,
    k: int,
    *,
    dtype=None,
    device=None,
    compute_dtype=None,
    block: int = 8,
    tol: float = 1e-8,
    max_basis: int | None = None,
    max_products: int | None = None,
    seed: int = 0,
) -> TopK:
    """Largest ``k`` eigenpairs of the PSD operator ``V -> matmul(V)`` (N x b -> N x b).

    The basis is kept in ``dtype`` (default float64); products run in ``compute_dtype`` (e.g. the
    model's float32, which halves their time; the residual check then measures the error that
    introduces). ``max_basis`` (default ``max(3k, k + 6 b)``) bounds memory at ``2 N max_basis``
    numbers; past it the method restarts from the ``k + b`` best Ritz vectors.
    """
    import torch

    dtype = dtype or torch.float64
    compute_dtype = compute_dtype or dtype
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    block = max(1, min(block, n))
    max_basis = min(n, max_basis or max(3 * k, k + 6 * block))
    max_products = max_products or max(20 * k, 500)
    gen = torch.Generator(device=device).manual_seed(seed)

    def apply(X):
        return matmul(X.to(compute_dtype)).to(dtype)

    best, stalled = float("inf"), 0
    Q = _new_block(None, torch.randn(n, block, dtype=dtype, device=device, generator=gen), gen)
    W = apply(Q)
    products = block
    while True:
        H = Q.T @ W
        H = (H + H.T) / 2
        theta, Y = torch.linalg.eigh(H)
        theta, Y = theta.flip(0), Y.flip(1)
        kk = min(k, Q.shape[1])
        U = Q @ Y[:, :kk]
        R = W @ Y[:, :kk] - U * theta[:kk]
        scale = theta[:kk].abs().clamp_min(torch.finfo(dtype).tiny)
        rel = (R.norm(dim=0) / scale).tolist()
        done = kk == k and max(rel) <= tol
        # Stagnation: with float32 products the residuals reach a floor (~1e-4 of theta); stop when the
        # worst residual has not improved by 10% over 8 block steps instead of spinning to max_products.
        if kk == k:
            stalled = 0 if max(rel) < 0.9 * best else stalled + 1
            best = min(best, max(rel))
        if done or products >= max_products or Q.shape[1] >= n or stalled >= 8:
            return TopK(theta[:kk], U, rel, products, bool(done or Q.shape[1] >= n), tol, block)
        if Q.shape[1] + block > max_basis:  # thick restart: keep the best k + b Ritz vectors
            keep = min(Q.shape[1], k + block)
            Q, W = Q @ Y[:, :keep], W @ Y[:, :keep]
            H = torch.diag(theta[:keep])
        # The Krylov extension: what Theta adds outside span(Q), compressed to its b main directions
        # (in exact arithmetic W - Q H has rank <= b, the block-Lanczos residual block).
        nb = min(block, n - Q.shape[1])
        Xr = W - Q @ H
        s, Z = torch.linalg.eigh(Xr.T @ Xr)
        X = _new_block(Q, Xr @ Z[:, -nb:], gen)
        WX = apply(X)
        products += nb
        Q = torch.cat([Q, X], dim=1)
        W = torch.cat([W, WX], dim=1)


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

    values: list[float]
    #: ``||K u_i - theta_i u_i|| / theta_1`` of the converged prefix (residual under 1% of the value).
    residuals: list[float]
    trace: float
    effective_rank_bounds: tuple[float, float]
    #: Numerical rank ``#{lambda_i > tol lambda_1}``: pairs whose residual interval lies above the
    #: threshold .. pairs whose interval reaches it (equal when no interval straddles it), assuming
    #: the Krylov space missed no eigenvalue above the threshold (a random start block).
    numerical_rank_bounds: tuple[int, int]
    dim: int

    @property
    def effective_rank(self) -> float:
        lo, hi = self.effective_rank_bounds
        return 0.5 * (lo + hi)


def _entropy(p) -> float:
    import math

    return -sum(v * math.log(v) for v in p if v > 0)


def effective_rank_bounds(theta: list[float], n: int, trace: float, radii: list[float] | None = None):
    """Bounds on ``exp(H(lambda / T))`` over every PSD spectrum of size n with ``lambda_i >= theta_i``
    (theta descending) and ``sum lambda = T``.

    Most entropy (upper bound, unconditional): the smallest values raised to a common level L,
    ``lambda_i = max(theta_i, L)``. Least entropy (lower bound): the excess ``T - sum theta`` as
    concentrated as the constraints allow; without ``radii`` all of it on lambda_1; with ``radii``
    (``lambda_i <= theta_i + radii[i]`` for the first ``len(radii)`` values, the residual bound when
    no eigenvalue was missed) greedily from the top, every later value capped at the last cap.
    """
    import math

    th = [max(float(v), 0.0) for v in theta][:n]
    if trace <= 0:
        return 0.0, 0.0
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
    return math.exp(h_lo), math.exp(max(h_hi, h_lo))


def krylov_spectrum(
    matmul: Callable[[Any], Any],
    n: int,
    trace: float,
    *,
    tol: float = 1e-3,
    width: float = 0.01,
    dim: int = 256,
    max_dim: int | None = None,
    block: int = 32,
    dtype=None,
    device=None,
    compute_dtype=None,
    seed: int = 0,
) -> PartialSpectrum:
    """Top of the spectrum of the PSD operator ``V -> matmul(V)`` from one block Krylov space (block
    Lanczos, full reorthogonalisation, one Rayleigh-Ritz at the end), grown until the effective-rank
    bounds are within ``width`` (relative) and the numerical rank at ``tol`` is pinned, or ``max_dim``
    (default n / 2) is reached, in steps of ``dim / 2``. Cost: ``dim`` products plus O(n dim^2) for the
    basis: far less than a full eigensolve when the spectrum decays (an NTK's does).
    """
    import torch

    dtype = dtype or torch.float64
    compute_dtype = compute_dtype or dtype
    max_dim = min(n, max_dim or max(dim, n // 2))
    block = max(1, min(block, n))
    gen = torch.Generator(device=device).manual_seed(seed)

    def apply(X):
        return matmul(X.to(compute_dtype)).to(dtype)

    # Q and W = K Q live in preallocated n x max_dim buffers (no concatenation per block)
    Qb = torch.empty(n, max_dim, dtype=dtype, device=device)
    Wb = torch.empty(n, max_dim, dtype=dtype, device=device)
    first = _new_block(None, torch.randn(n, block, dtype=dtype, device=device, generator=gen), gen)
    Qb[:, :block], Wb[:, :block] = first, apply(first)
    m, last = block, slice(0, block)
    target = min(dim, max_dim)
    while True:
        while m < target:
            nb = min(block, max_dim - m)
            X = _new_block(Qb[:, :m], Wb[:, last], gen)[:, :nb]
            Qb[:, m : m + nb], Wb[:, m : m + nb] = X, apply(X)
            last, m = slice(m, m + nb), m + nb
        Q, W = Qb[:, :m], Wb[:, :m]
        H = Q.T @ W
        theta, Y = torch.linalg.eigh((H + H.T) / 2)
        theta, Y = theta.flip(0).clamp_min(0), Y.flip(1)
        vals = theta.tolist()
        lam1 = vals[0] if vals else 0.0
        R = W @ Y - (Q @ Y) * theta
        rad = (R.norm(dim=0)).tolist()
        # The converged prefix: pairs whose residual is under 1% of their value. Only there is the
        # no-missed-eigenvalue reading ``lambda_i <= theta_i + ||r_i||`` used (beyond it, the Krylov
        # space has not resolved the spectrum and eigenvalues may sit between the Ritz values).
        top = next((i for i, (v, r) in enumerate(zip(vals, rad)) if r > 0.01 * v), len(vals))
        top = max(top, 1)
        res = [r / max(lam1, 1e-300) for r in rad[:top]]
        r1 = rad[0]
        lo, hi = effective_rank_bounds(vals, n, trace, rad[:top])
        # lambda_1 lies in [theta_1, theta_1 + r_1]: the threshold in [tol theta_1, tol (theta_1 + r_1)].
        # A pair counts surely when theta_i - r_i is above the top of that range, surely not when
        # theta_i + r_i is below its bottom; past the prefix every lambda_i <= theta_top + r_top.
        t_lo, t_hi = tol * lam1, tol * (lam1 + r1)
        nr_lo = sum(1 for i in range(top) if vals[i] - rad[i] > t_hi)
        nr_hi = sum(1 for i in range(top) if vals[i] + rad[i] > t_lo)
        if vals[top - 1] + rad[top - 1] > t_lo:
            nr_hi = n
        good = hi - lo <= width * lo and nr_lo == nr_hi
        if good or m >= max_dim:
            return PartialSpectrum(vals, res, trace, (lo, hi), (nr_lo, nr_hi), m)
        target = min(max_dim, m + max(dim // 2, block))
