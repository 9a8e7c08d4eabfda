"""What ``inrdiag ntk`` / ``ntk_report`` compute and their defaults: ``NTKConfig`` and the constants.

Torch-free on purpose: the command line imports it for its defaults before torch is loaded (the thread
policy, ``inrdiag.threads``, must run first).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..constants import DEFAULT_TOL
from ..errors import InrdiagError
from ..seeds import check_seed

METHODS = ("auto", "exact", "lanczos")
DEFAULT_METHOD = "auto"
DTYPES = ("auto", "float32", "float64")
#: The ``inrdiag ntk`` command's precision: float32 products everywhere (kernels, Krylov/Lanczos products)
#: with float64 bases and float64 p x p eigensolves; what each solve used and its accuracy are in
#: ``accuracy`` and ``precision``.
DEFAULT_DTYPE = "auto"
#: The library's precision (``NTKConfig()``): every product and eigensolve in float64, the reference.
LIBRARY_DTYPE = "float64"
DEFAULT_DEVICE = "auto"
#: Relative width to which ``auto`` pins every Krylov spectrum's effective rank.
EFF_RANK_WIDTH = 0.01
#: ``auto`` stays exact up to this many points: beyond it the N x N matrices (and eigvalsh) cost minutes.
EXACT_MAX_POINTS = 8192
#: Groups whose Khatri-Rao width p is at most this get exact spectra from the p x p Gram.
SMALL_GRAM = 4096
#: Default points per axis for ``ntk`` (N = 4096 in 1-D, 2-D and 3-D): the exact method's range.
DEFAULT_GRID = {1: 4096, 2: 64, 3: 16}
#: Points per axis for an input dimension not in ``DEFAULT_GRID``.
DEFAULT_GRID_OTHER = 8
DEFAULT_TOP_K = 32
#: Block size of the Lanczos method (``--method lanczos``).
DEFAULT_BLOCK = 4
#: ``decay`` reports lambda_k / lambda_1 for these k.
DECAY_AT = (10, 100)
#: Krylov spaces of ``auto`` (exact mode): first checked at this dimension, then every quarter more (at
#: least a block, 32 columns), up to a quarter of N; if the goals are not met by then, or the checks show
#: they will not be (a flat spectrum), the matrix gets a float64 ``eigvalsh`` instead.
KRYLOV_DIM = 128
#: ``auto`` uses Krylov spectra only above this many points; below, a float64 ``eigvalsh`` of the N x N
#: matrix is as fast (0.3 s at N = 1024) and gives every eigenvalue.
KRYLOV_MIN_POINTS = 1024
#: Eigenvalues below this fraction of lambda_1 need not converge in an ``auto`` Krylov space: float32
#: kernels resolve them no better (their rounding is ~1e-7 lambda_1); ``decay`` then reports null past them.
KRYLOV_FLOOR = 1e-6
#: Lanczos stopping tolerance on ``||Theta u - theta u|| / theta`` by product precision.
EIG_TOL = {"float64": 1e-8, "float32": 1e-3}


@dataclass(frozen=True)
class NTKConfig:
    """What ``ntk_report`` computes; every field is a flag of ``inrdiag ntk`` (whose defaults these are,
    except ``dtype``: the command runs ``DEFAULT_DTYPE``, the library ``LIBRARY_DTYPE``)."""

    #: Points per axis of the grid in [-1, 1]^d (None: ``DEFAULT_GRID``).
    grid: int | None = None
    #: Use this many seeded random points of the grid instead.
    points: int | None = None
    #: Seed of ``points`` and of the Krylov/Lanczos start blocks, in [0, 2^32 - 1].
    seed: int = 0
    #: Eigenpairs reported (all in exact mode with dtype float64/float32).
    top_k: int = DEFAULT_TOP_K
    method: str = DEFAULT_METHOD
    #: "auto" (fast, accuracy checked and reported), "float32" or "float64" (the reference).
    dtype: str = LIBRARY_DTYPE
    device: str = DEFAULT_DEVICE
    #: Numerical rank counts eigenvalues above ``tol * lambda_1``.
    tol: float = DEFAULT_TOL
    #: Display names of the linear layers (default: the module paths or checkpoint keys).
    layer_names: tuple[str, ...] | None = None
    #: Keep the top-k eigenvectors (all N in exact mode) on the report (``NTKReport.vectors``).
    vectors: bool = False
    #: Block size of the Lanczos method.
    block: int = DEFAULT_BLOCK
    #: Lanczos stopping tolerance on ``||Theta u - theta u|| / theta`` (None: ``EIG_TOL`` of the products).
    eig_tol: float | None = None
    #: Run the Lanczos products on low-rank factors within a proven bound (``Factor.lowrank``).
    lowrank: bool = True
    #: The coordinate dimension d, when the module cannot tell (see ``inrdiag.models.adapter``).
    in_features: int | None = None

    def validate(self) -> None:
        """Raise an InrdiagError naming the flag, the value and what is allowed."""
        if self.method not in METHODS:
            raise InrdiagError(f"unknown --method {self.method!r}; allowed: {', '.join(METHODS)}")
        if self.dtype not in DTYPES:
            raise InrdiagError(f"unknown --dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if not 0 < self.tol < 1:
            raise InrdiagError(f"--tol must be in (0, 1), got {self.tol}")
        check_seed(self.seed, "seed")
        if self.grid is not None and self.grid < 2:
            raise InrdiagError(f"--grid must be at least 2 points per axis, got {self.grid}")
        if self.points is not None and self.points < 1:
            raise InrdiagError(f"--points must be at least 1, got {self.points}")
        if self.top_k < 1:
            raise InrdiagError(f"--top-k must be at least 1, got {self.top_k}")
        if self.block < 1:
            raise InrdiagError(f"block must be at least 1, got {self.block}")
        if self.eig_tol is not None and not 0 < self.eig_tol < 1:
            raise InrdiagError(f"eig_tol must be in (0, 1), got {self.eig_tol}")


def make_config(config: NTKConfig | None = None, **options: Any) -> NTKConfig:
    """``config`` (default ``NTKConfig()``) with ``options`` (field names) replaced, validated."""
    names = {f.name for f in dataclasses.fields(NTKConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown NTK option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    if "layer_names" in options and options["layer_names"] is not None:
        options["layer_names"] = tuple(options["layer_names"])
    cfg = dataclasses.replace(config or NTKConfig(), **options)
    cfg.validate()
    return cfg
