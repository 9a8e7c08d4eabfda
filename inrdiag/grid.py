"""Coordinate grids in [-1, 1]^d: ``linspace(-1, 1, n)`` per axis, 'ij' order, flattened to N x d."""

from __future__ import annotations

from .errors import ResourceError, SpecError

#: Default points per axis by coordinate dimension (2-D images: 256, 3-D volumes: 48).
DEFAULT_POINTS = {1: 4096, 2: 256, 3: 48}


def default_points(dim: int) -> int:
    return DEFAULT_POINTS.get(dim, 8)


def grid_shape(dim: int, n: int | tuple[int, ...] | None) -> tuple[int, ...]:
    """``(n,) * dim`` (default points per axis when None); a tuple of ``dim`` sizes is taken as the shape."""
    if isinstance(n, (tuple, list)):
        if len(n) != dim or min(n) < 2:
            raise SpecError(f"grid shape {list(n)} must have {dim} axes of at least 2 points")
        return tuple(int(v) for v in n)
    n = default_points(dim) if n is None else int(n)
    if n < 2:
        raise SpecError(f"--grid must be at least 2 points per axis, got {n}")
    return (n,) * dim


def make_grid(shape: tuple[int, ...], dtype=None, device=None):
    """The N x d matrix of grid coordinates, N = prod(shape); axis 0 varies slowest."""
    import torch

    axes = [torch.linspace(-1.0, 1.0, n, dtype=dtype or torch.float64, device=device) for n in shape]
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
