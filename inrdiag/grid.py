"""Coordinate grids in [-1, 1]^d: ``linspace(-1, 1, n)`` per axis, 'ij' order, flattened to N x d."""

from __future__ import annotations

import math
import numbers

import torch

from .errors import ResourceError, SpecError

#: Default points per axis by coordinate dimension (2-D images: 256, 3-D volumes: 48).
DEFAULT_POINTS = {1: 4096, 2: 256, 3: 48}


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def default_points(dim: int) -> int:
    return DEFAULT_POINTS.get(dim, 8)


def grid_shape(dim: int, n: int | tuple[int, ...] | None) -> tuple[int, ...]:
    """``(n,) * dim`` (n: the default for ``dim`` when None; an integer >= 2); a tuple/list of ``dim``
    integer sizes >= 2 is taken as the shape itself."""
    if not _is_int(dim) or dim < 1:
        raise SpecError(f"the input dimension must be an integer >= 1, got {dim!r}")
    if isinstance(n, (tuple, list)):
        if len(n) != dim or not all(_is_int(v) for v in n) or min(n) < 2:
            raise SpecError(f"grid shape {list(n)} must have {dim} integer axes of at least 2 points")
        return tuple(int(v) for v in n)
    if n is None:
        n = default_points(int(dim))
    elif not _is_int(n):
        raise SpecError(f"--grid must be an integer number of points per axis (>= 2), got {n!r}")
    if n < 2:
        raise SpecError(f"--grid must be at least 2 points per axis, got {n}")
    return (int(n),) * int(dim)


def make_grid(
    shape: tuple[int, ...], dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The N x d matrix of grid coordinates, N = prod(shape); axis 0 varies slowest.

    ``shape`` is a non-empty sequence of integers >= 1 (1: the single coordinate -1 on that axis).
    """
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) == 0:
        raise SpecError(f"grid shape must be a non-empty tuple of integers >= 1, got {shape!r}")
    if not all(_is_int(n) and n >= 1 for n in shape):
        raise SpecError(f"grid shape must hold integers >= 1 points per axis, got {tuple(shape)!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise SpecError(f"grid dtype must be a floating torch dtype (torch.float32, torch.float64), got {dtype!r}")
    n = math.prod(int(v) for v in shape)
    item = torch.finfo(dtype or torch.float64).bits // 8
    check_memory(2.0 * n * len(shape) * item, f"a grid of {n:,} points", "--grid")
    axes = [torch.linspace(-1.0, 1.0, int(n), dtype=dtype or torch.float64, device=device) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def check_memory(nbytes: float, what: str, flag: str, limit_bytes: float | None = None) -> None:
    """Refuse (ResourceError) when ``nbytes`` exceeds the limit (default: half the machine's RAM)."""
    limit = limit_bytes if limit_bytes is not None else available_memory() / 2
    if nbytes > limit:
        raise ResourceError(
            f"{what} needs about {nbytes / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB "
            f"allowed; use a smaller {flag}"
        )


def available_memory() -> float:
    """Physical memory in bytes (from sysconf; 8 GiB if unknown)."""
    import os

    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8.0 * 2**30
