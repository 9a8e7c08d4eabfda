"""One table of numerical tolerances for every cross-check (dtype -> tolerance), as neural-tangents'
test utilities keep one: an assert names the *kind* of comparison, never a literal.

Kinds:
- ``exact``: the same mathematics evaluated in another order (a sum split in chunks, a Gram from
  factors vs J J^T, a fast path vs the generic one). Only rounding differs: a few ulps of the
  operands' scale, grown by the length of the reductions in our tiny test nets.
- ``eig``: eigen/singular values of a dense solver vs another dense solver (LAPACK vs numpy, eigh vs
  svd), relative to the largest value (small values carry absolute error ~ eps * lambda_1).
- ``iterative``: Krylov / randomized solvers checked against a dense solve (their own stopping
  tolerance dominates rounding).
- ``gram``: singular values of Z taken as ``sqrt(eig(Z^T Z))`` (``inrdiag.spectra``, the Gram matrix
  accumulated in float64) vs an SVD of Z. An eigenvalue's absolute error ~ eps * s_1^2 becomes
  ~ sqrt(eps) * s_1 on its square root, so a (near) zero singular value reads ~1e-8 s_1 in float64.
  For float32 features the float32 rounding of the forward pass (a few 1e-7 s_1 per layer, times w0
  for sine layers) dominates that floor.

Float32 is what models really run in, so every float64 cross-check has a float32 twin.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Tol(NamedTuple):
    rtol: float
    atol: float


TOLERANCES: dict[str, dict[torch.dtype, Tol]] = {
    "exact": {torch.float64: Tol(1e-12, 1e-12), torch.float32: Tol(1e-5, 1e-6)},
    "eig": {torch.float64: Tol(1e-9, 1e-12), torch.float32: Tol(1e-4, 1e-6)},
    "iterative": {torch.float64: Tol(1e-6, 1e-10), torch.float32: Tol(1e-3, 1e-5)},
    "gram": {torch.float64: Tol(1e-9, 1e-7), torch.float32: Tol(1e-4, 1e-6)},
}


def tol(dtype: torch.dtype, kind: str = "exact") -> Tol:
    """The (rtol, atol) pair of ``kind`` for ``dtype``; complex dtypes take their real part's entry."""
    real = {torch.complex128: torch.float64, torch.complex64: torch.float32}.get(dtype, dtype)
    return TOLERANCES[kind][real]


def assert_close(actual, expected, dtype: torch.dtype, kind: str = "exact", scale: float | None = None) -> None:
    """``|actual - expected| <= atol * scale + rtol * |expected|`` elementwise, with the table's entry.

    ``scale`` (default: max |expected|) makes ``atol`` relative to the size of the quantity, so a
    spectrum's tail is judged against lambda_1 rather than against 1."""
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    t = tol(dtype, kind)
    s = float(e.abs().max()) if scale is None and e.numel() else (scale or 1.0)
    torch.testing.assert_close(a, e, rtol=t.rtol, atol=t.atol * max(s, 1e-300))
