"""Which points an NTK is computed on: the grid (``--grid``) or a seeded random subset of its rows
(``--points``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InrdiagError
from ..grid import check_memory, make_grid
from ..seeds import check_seed
from .config import DEFAULT_GRID, DEFAULT_GRID_OTHER


@dataclass
class NTKPoints:
    """The points of an NTK report: a grid, or a seeded random subset of its rows."""

    shape: tuple[int, ...]
    #: N x d coordinates.
    coords: Tensor
    #: Row indices into ``make_grid(shape)`` (None: the whole grid).
    indices: Tensor | None

    @property
    def count(self) -> int:
        return int(self.coords.shape[0])


def grid_points(dim: int, grid: int | None = None) -> int:
    """Points per axis of the NTK grid for d-dimensional inputs: ``grid``, else ``DEFAULT_GRID``."""
    return DEFAULT_GRID.get(dim, DEFAULT_GRID_OTHER) if grid is None else int(grid)


def ntk_points(
    dim: int,
    grid: int | None,
    points: int | None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> NTKPoints:
    """The grid (``--grid``) or its seeded random subset of ``points`` rows (``--points``)."""
    n = grid_points(dim, grid)
    if n < 2:
        raise InrdiagError(f"--grid must be at least 2 points per axis, got {n}")
    shape = (n,) * dim
    total = math.prod(shape)
    check_memory(8.0 * total * dim * 2, f"a {'x'.join(map(str, shape))} grid", "--grid")
    x = make_grid(shape, dtype=dtype, device=device)
    if points is None:
        return NTKPoints(shape=shape, coords=x, indices=None)
    if not 1 <= points <= total:
        raise InrdiagError(f"--points must be in 1..{total} (the {'x'.join(map(str, shape))} grid), got {points}")
    gen = torch.Generator().manual_seed(check_seed(seed, "seed"))
    idx = torch.randperm(total, generator=gen)[:points].sort().values
    return NTKPoints(shape=shape, coords=x[idx.to(x.device)], indices=idx)
