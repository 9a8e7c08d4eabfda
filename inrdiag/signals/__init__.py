"""Signals beyond images and voxel grids: meshes and point clouds (occupancy, SDF), audio, video.

``load_signal`` is the one hook ``inrdiag.fitting.targets.load_target`` calls: it returns a ``Target`` for
the file types and kinds handled here, or None to let ``load_target`` read an image / voxel grid.
Every optional library (trimesh, scikit-image, scipy, soundfile, PyAV) is imported lazily and
refused with its install hint when absent (extras ``mesh``, ``audio``, ``video``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .kinds import KINDS, METRIC_NAME, check_kind

if TYPE_CHECKING:
    from ..fitting.targets import Target

__all__ = ["KINDS", "METRIC_NAME", "SIGNAL_SUFFIXES", "load_signal"]

#: Target kinds a user may ask for with ``--target-kind`` ("auto": from the file).
TARGET_KINDS = ("auto", *KINDS)


def _suffixes() -> tuple[set[str], set[str], set[str]]:
    """The suffixes read as (audio, meshes and point clouds, video files)."""
    from .audio import AUDIO_SUFFIXES
    from .mesh import MESH_SUFFIXES, POINT_SUFFIXES
    from .video import VIDEO_FILE_SUFFIXES

    return AUDIO_SUFFIXES, MESH_SUFFIXES | POINT_SUFFIXES, VIDEO_FILE_SUFFIXES


SIGNAL_SUFFIXES = sorted(set().union(*_suffixes()))


def load_signal(
    p: Path, size: int | None = None, kind: str | None = None, seconds: float | None = None
) -> Target | None:
    """The Target for ``p`` if it is a signal handled here (by suffix, or by ``kind``), else None.

    kind None/"auto": meshes and point clouds -> occupancy, audio files -> audio, video files, folders
    and 4-D ``.npy`` -> video. ``kind="sdf"`` turns a mesh into a signed distance target,
    ``kind="video"`` reads a 3-D ``.npy`` (T x H x W) or an animated ``.gif`` as frames.
    """
    from .errors import TargetError

    kind = None if kind in (None, "auto") else check_kind(kind)
    audio, shapes, videos = _suffixes()
    suffix = p.suffix.lower()
    if seconds is not None and not (suffix in audio and kind in (None, "audio")):
        raise TargetError(f"--seconds crops audio files only; {p} is not read as audio")
    if suffix in shapes:
        if kind not in (None, "occupancy", "sdf"):
            raise TargetError(f"{p}: a mesh/point cloud becomes an occupancy or sdf target, not {kind}")
        from .mesh import load_mesh

        return load_mesh(p, size, kind or "occupancy")
    if suffix in audio:
        if kind not in (None, "audio"):
            raise TargetError(f"{p}: an audio file becomes an audio target, not {kind}")
        from .audio import load_audio

        return load_audio(p, size, seconds)
    if kind in ("occupancy", "sdf", "audio"):
        if kind == "occupancy" and suffix in (".npy", ".npz"):
            return None  # the voxel-grid loader
        raise TargetError(f"{p}: --target-kind {kind} needs a mesh/point cloud"
                          f"{' or .npy/.npz voxel grid' if kind == 'occupancy' else ''}"
                          f"{' or an audio file' if kind == 'audio' else ''}")  # fmt: skip
    if kind == "image":
        from ..fitting.targets import IMAGE_SUFFIXES

        if suffix not in IMAGE_SUFFIXES and suffix != "":
            raise TargetError(f"{p}: --target-kind image needs an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return None
    if suffix in videos or (p.is_dir() and kind in (None, "video")) or kind == "video":
        from .video import load_video

        return load_video(p, size)
    if suffix == ".npy" and kind is None and _npy_ndim(p) == 4:
        from .video import load_video

        return load_video(p, size)
    return None


def _npy_ndim(p: Path) -> int | None:
    """The number of dimensions in a .npy header, read from the header alone (no data is mapped or
    decoded; None if unreadable: the caller's loader reports it)."""
    import numpy as np

    try:
        fmt = np.lib.format
        with open(p, "rb") as f:
            major, _ = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape, _, _ = read(f)
        return len(shape)
    except Exception:  # noqa: BLE001 - any header problem is reported by the real loader
        return None
