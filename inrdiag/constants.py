"""Numerical defaults shared by the engine and the command line, defined once (torch-free: the CLI reads
them for its option defaults before torch is imported)."""

from __future__ import annotations

#: Relative tolerance of a numerical rank: count singular values (representations) or eigenvalues
#: (NTK) above ``tol`` times the largest.
DEFAULT_TOL = 1e-3
