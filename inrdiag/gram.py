"""Symmetric Gram matrices ``X^T X`` from their lower block triangle: ``add_lower`` accumulates the
blocks on and below the diagonal (column blocks of ``block``: at width w about ``(1 + block / w) / 2`` of
a full GEMM's flops), ``mirror_lower`` copies them to the strict upper part once the sum is complete.
Used by the rank spectra (``inrdiag.spectra``) and the NTK's Khatri-Rao and compression Grams
(``inrdiag.ntk.factors``)."""

from __future__ import annotations

from torch import Tensor


def add_lower(G: Tensor, X: Tensor, block: int) -> Tensor:
    """``G += X^T X`` on the lower block triangle of G (p x p, X: rows x p); the strict upper part of G
    is left alone. Returns G."""
    p = X.shape[1]
    for c in range(0, p, block):
        e = min(p, c + block)
        G[c:e, :e].addmm_(X[:, c:e].T, X[:, :e])
    return G


def mirror_lower(G: Tensor, block: int) -> Tensor:
    """Copy the lower block triangle of G (as ``add_lower`` fills it, same ``block``) to its strict upper
    part, so G is the full symmetric matrix. Returns G."""
    p = G.shape[0]
    for c in range(0, p - block, block):
        e = c + block
        G[c:e, e:] = G[e:, c:e].T
    return G
