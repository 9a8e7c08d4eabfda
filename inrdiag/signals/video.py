"""Video targets: frames on the 3-D grid (t, y, x) in [-1, 1]^3, values in [0, 1], gray or RGB.

Sources: a ``.npy`` array T x H x W (x C, C in 1/3/4; uint8, uint16, bool or float in [0, 1]), an
animated ``.gif`` (with ``--target-kind video``; imageio), a video file (``.mp4/.mov/.avi/.mkv/.webm``,
PyAV: the ``video`` extra), or a folder of same-sized frame images in natural order (frame_2 before
frame_10). Alpha is dropped. Shapes come from headers first (npy header, container/stream info, each
frame's image header), so a video beyond the point limit or memory is refused before it is decoded.
``size`` resamples every axis (time too) to ``size`` points (trilinear, ``align_corners=True``).
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..files import atomic_write
from ..fitting.targets import IMAGE_SUFFIXES, Target, _check_points, file_sha256
from ..grid import check_memory
from ..metrics import psnr
from .errors import VideoError, require
from .kinds import frame_psnr

#: Frames as decoded (T x H x W x C, or T x H x W), any pixel type.
Frames = npt.NDArray[Any]

VIDEO_FILE_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


def natural_key(name: str) -> list[int | str]:
    """Sort key of a file name by its runs of digits as numbers (frame_2 before frame_10)."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


def _check_size(shape: tuple[int, ...], p: Path, size: int | None) -> None:

    t, h, w = shape[:3]
    c = shape[3] if len(shape) > 3 else 1
    if t < 2:
        raise VideoError(f"{p}: a video of {t} frame(s); at least 2 are needed (fit one frame as an image)")
    if min(h, w) < 2:
        raise VideoError(f"{p}: frames of {h}x{w}; at least 2x2 pixels are needed")
    _check_points(t * h * w * min(c, 3), p)
    if size is not None:
        _check_points(size**3 * min(c, 3), p)
    check_memory(4.0 * t * h * w * c * 2, f"decoding {t}x{h}x{w}x{c} frames of {p}", "--size")


def _scale(a: Frames, p: Path) -> npt.NDArray[np.float32]:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == bool:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        x = a.astype(np.float32)
        if not np.isfinite(x).all():
            raise VideoError(f"{p}: frames hold NaN/Inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise VideoError(f"{p}: float frames must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
        return x
    raise VideoError(f"{p}: unsupported pixel type {a.dtype}; expected uint8, uint16, bool or float in [0, 1]")


def _from_npy(p: Path, size: int | None) -> tuple[Frames, dict[str, Any]]:
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise VideoError(f"{p}: cannot read as .npy ({str(exc).splitlines()[0][:120] if str(exc) else exc})") from None
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4)):
        raise VideoError(f"{p}: a video array must be T x H x W or T x H x W x C (C = 1/3/4), got {list(arr.shape)}")
    _check_size(tuple(int(s) for s in arr.shape), p, size)
    return np.asarray(arr), {"source": "npy"}


def _from_frames(files: list[Path], p: Path, size: int | None) -> tuple[Frames, dict[str, Any]]:
    shapes: list[tuple[int, ...]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            try:
                shapes.append(tuple(iio.improps(f).shape))
            except Exception:
                raise VideoError(f"{f}: cannot read as an image frame") from None
    first = shapes[0]
    for f, s in zip(files, shapes):
        if s[:2] != first[:2]:
            raise VideoError(f"{p}: frame {f.name} is {s[0]}x{s[1]}, frame {files[0].name} is {first[0]}x{first[1]}; "
                             "all frames must have the same size")  # fmt: skip
    _check_size((len(files), first[0], first[1], max(len(s) == 3 and s[2] or 1 for s in shapes)), p, size)
    frames = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            a = np.asarray(iio.imread(f))
            a = a[..., None] if a.ndim == 2 else a
            frames.append(a)
    cs = {a.shape[-1] for a in frames}
    if len(cs) > 1:  # gray and RGB frames mixed: gray repeated
        frames = [np.repeat(a[..., :1], 3, -1) if a.shape[-1] in (1, 2) else a[..., :3] for a in frames]
    return np.stack(frames), {"source": "frames", "frames_folder": str(p), "frame_files": len(files)}


def _from_gif(p: Path, size: int | None) -> tuple[Frames, dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            props = iio.improps(p, index=None)
            shape = tuple(int(s) for s in props.shape)
            _check_size(shape if len(shape) == 4 else (*shape, 1), p, size)
            arr = np.asarray(iio.imread(p, index=None))
        except VideoError:
            raise
        except Exception as exc:
            raise VideoError(f"{p}: cannot read as an animated GIF ({type(exc).__name__})") from None
    if arr.ndim == 3 and shape[0] == 1:
        arr = arr[None]
    return arr, {"source": "gif"}


def _from_container(p: Path, size: int | None) -> tuple[Frames, dict[str, Any]]:
    av = require("av", "video", f"{p}: decoding video files")
    try:
        container = av.open(str(p))
    except Exception as exc:
        raise VideoError(f"{p}: cannot open as a video ({type(exc).__name__})") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{p}: no video stream")
        stream = container.streams.video[0]
        t = int(stream.frames or 0)
        if t == 0 and stream.duration and stream.average_rate:  # frame count not in the header: estimate it
            t = int(math.ceil(float(stream.duration * stream.time_base) * float(stream.average_rate)))
        h, w = int(stream.codec_context.height), int(stream.codec_context.width)
        _check_size((max(t, 2), h, w, 3), p, size)
        fps = float(stream.average_rate) if stream.average_rate else None
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if len(frames) < 2:
        raise VideoError(f"{p}: a video of {len(frames)} frame(s); at least 2 are needed (fit one frame as an image)")
    return np.stack(frames), {"source": "video", "fps": fps}


def load_video(p: Path, size: int | None = None) -> Target:
    """The frames of ``p`` as a video Target: values (T*H*W x C) in [0, 1] on the (t, y, x) grid, 'ij' order."""
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                        and not f.name.startswith(".")), key=lambda f: natural_key(f.name))  # fmt: skip
        if not files:
            raise VideoError(f"{p} holds no frame images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if len(files) < 2:
            raise VideoError(f"{p}: a video of 1 frame; at least 2 are needed (fit one frame as an image)")
        arr, meta = _from_frames(files, p, size)
        sha = _folder_sha256(files)
    else:
        suffix = p.suffix.lower()
        if suffix in (".npy",):
            arr, meta = _from_npy(p, size)
        elif suffix == ".gif":
            arr, meta = _from_gif(p, size)
        elif suffix in VIDEO_FILE_SUFFIXES:
            arr, meta = _from_container(p, size)
        else:
            raise VideoError(f"{p}: not a video; use .npy (T x H x W (x C)), .gif, "
                             f"{'/'.join(sorted(VIDEO_FILE_SUFFIXES))} or a folder of frames")  # fmt: skip
        sha = file_sha256(p)
    if arr.ndim == 3:
        arr = arr[..., None]
    _check_size(tuple(int(s) for s in arr.shape), p, size)
    x = _scale(np.ascontiguousarray(arr), p)
    if x.shape[-1] == 2:
        x = x[..., :1]
    elif x.shape[-1] == 4:
        x = x[..., :3]
    t = torch.from_numpy(np.ascontiguousarray(x))  # T x H x W x C
    native = list(t.shape[:3])
    notes: list[str] = []
    if size is not None:
        if size < 2:
            raise VideoError(f"--size must be at least 2, got {size}")
        v = t.permute(3, 0, 1, 2)[None]
        v = torch.nn.functional.interpolate(v, size=(size,) * 3, mode="trilinear", align_corners=True).clamp(0, 1)
        t = v[0].permute(1, 2, 3, 0).contiguous()
        notes.append(f"resampled {'x'.join(map(str, native))} -> {size}x{size}x{size} (t, y, x; trilinear)")
    shape = tuple(int(s) for s in t.shape[:3])
    meta = {**meta, "frames": shape[0], "native_shape": native, "notes": notes}
    values = t.reshape(-1, t.shape[-1]).contiguous()
    tgt = Target("video", str(p), sha, shape, values, meta=meta)
    tgt.evaluate = _frame_evaluator(tgt)
    return tgt


def _frame_evaluator(tgt: Target) -> Callable[[nn.Module, torch.Tensor], dict[str, Any]]:
    """The target's ``evaluate(model, out)``: PSNR of every frame and of the whole video."""

    def evaluate(model: nn.Module, out: torch.Tensor) -> dict[str, Any]:

        vals = tgt.values.to(out.device)
        per = frame_psnr(out, vals, tgt.shape[0])
        finite = [v for v in per if math.isfinite(v)]
        return {"frame_psnr": per, "overall_psnr": psnr(out, vals),
                "frame_psnr_mean": sum(finite) / len(finite) if finite else math.inf,
                "frame_psnr_min": min(per), "frame_psnr_max": max(per)}  # fmt: skip

    return evaluate


def _folder_sha256(files: list[Path]) -> str:
    """sha256 over the frames' names and contents, in order (a folder has no single file hash)."""

    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def write_video(path: str, frames: npt.ArrayLike, force: bool = False) -> None:
    """Write T x H x W x C frames in [0, 1]: ``.npy`` (float32) or ``.gif`` (8-bit, imageio)."""

    suffix = Path(path).suffix.lower()
    x = np.clip(np.asarray(frames, dtype=np.float32), 0, 1)
    if suffix == ".npy":
        atomic_write(path, lambda tmp: save_npy(tmp, x), force)
        return

    data = (x * 255 + 0.5).astype(np.uint8)
    if data.shape[-1] == 1:
        data = data[..., 0]
    atomic_write(path, lambda tmp: iio.imwrite(tmp, data, extension=".gif", loop=0), force)


def save_npy(tmp: str, x: npt.ArrayLike) -> None:
    """``np.save`` to exactly ``tmp`` (``np.save`` on a name would append ``.npy`` to a temp name)."""

    with open(tmp, "wb") as f:
        np.save(f, x)
