"""Errors of the signal loaders: ``TargetError`` subclasses, so the CLI turns them into exit code 2."""

from __future__ import annotations

from types import ModuleType

from ..errors import TargetError


class MissingDependencyError(TargetError):
    """An optional package (an extra of inrdiag) is needed for this file type; the message says how to install it."""


class MeshError(TargetError):
    """A mesh or point cloud that cannot become an occupancy or SDF target (empty, NaN, not watertight...)."""


class AudioError(TargetError):
    """An audio file that cannot become a 1-D target (no samples, too many channels...)."""


class VideoError(TargetError):
    """A video that cannot become a (t, y, x) target (one frame, mismatched frame sizes...)."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional dependency, or refuse with the install hint (``pip install 'inrdiag[extra]'``)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"skimage": "scikit-image", "av": "av"}.get(module, module)
        raise MissingDependencyError(
            f"{what} needs the optional package {package!r}: pip install 'inrdiag[{extra}]'"
        ) from None
