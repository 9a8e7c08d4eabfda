"""Fitting targets: images and occupancy grids on the coordinate grid, and their metrics.

Convention (the same as ``grid.make_grid``): a target of grid shape (n_0, ..., n_{d-1}) has its
sample at index (i_0, ...) at coordinate (linspace(-1,1,n_0)[i_0], ...), flattened in 'ij' order.
For an image, axis 0 is the row (top to bottom) and axis 1 the column, so pixel centres sit on the
grid and the corners of the image are at (-1, -1) and (1, 1).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from ..errors import TargetError
from ..metrics import psnr, to_luma

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
VOLUME_SUFFIXES = {".npy", ".npz"}
#: Largest target accepted (points); beyond it the full-batch tensors alone exceed a few GiB.
MAX_POINTS = 2**26


@dataclass
class Target:
    """A target sampled on a grid: ``values`` is N x C in [0, 1] (occupancy: exactly 0 or 1; audio: [-1, 1]; sdf: signed distances)."""

    kind: str  # "image" | "occupancy", and (inrdiag.signals) "audio" | "video" | "sdf"
    path: str
    sha256: str
    shape: tuple[int, ...]
    values: torch.Tensor  # N x C, float32
    #: Plain-JSON facts of the loader (sample rate, mesh normalisation, notes), kept in provenance.
    meta: dict[str, Any] = field(default_factory=dict)
    #: Optional ``evaluate(model, out) -> dict`` run after a fit (dense held-out IoU, per-frame PSNR).
    evaluate: Any = field(default=None, repr=False, compare=False)
    #: What was done to the file's data on the way in (first frame of an animation, a rescaled range ...).
    notes: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def points(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return len(self.shape)

    def coords(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """The grid coordinates (N x d) of the target's samples (``grid.make_grid``)."""
        from ..grid import make_grid

        return make_grid(self.shape, dtype=dtype, device=device)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256, "shape": list(self.shape),
                "channels": self.channels, "points": self.points, "notes": list(self.notes),
                **({"meta": self.meta} if self.meta else {})}  # fmt: skip


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_target(path: str | Path, size: int | None = None, kind: str | None = None,
                seconds: float | None = None) -> Target:  # fmt: skip
    """Load an image (gray/RGB/RGBA -> RGB, 8/16-bit or float) or a 3-D occupancy grid (.npy/.npz); meshes,
    point clouds, audio and video through ``inrdiag.signals.load_signal`` (``kind``: None/"auto" or a
    target kind; ``seconds``: audio crop).

    ``size`` resamples to ``size`` points per axis (images: antialiased bilinear with
    ``align_corners=True``, matching the linspace grid; volumes: nearest). The size of the data is
    read from the file's header and checked before the data is decoded.
    """
    from ..files import user_path

    p = user_path(path, "target")
    if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 2):
        raise TargetError(f"--size must be an integer >= 2, got {size!r}")
    size = None if size is None else int(size)
    if not p.exists():
        raise TargetError(f"{p}: no such file")
    from ..signals import load_signal

    signal = load_signal(p, size, kind=kind, seconds=seconds)
    if signal is not None:
        return signal
    if p.is_dir():
        raise TargetError(f"{p} is a folder; expected an image or a .npy/.npz occupancy grid")
    if p.stat().st_size == 0:
        raise TargetError(f"{p} is empty")
    suffix = p.suffix.lower()
    if suffix in VOLUME_SUFFIXES:
        return _load_volume(p, size)
    if suffix in IMAGE_SUFFIXES or suffix == "":
        return _load_image(p, size)
    raise TargetError(
        f"{p}: unknown target type '{suffix}'; use an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or .npy/.npz"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def _image_header(p: Path) -> tuple[int, int, int, int] | None:
    """(height, width, channels as decoded, frames) from the file's header (PIL, lazy: no pixel is decoded);
    None when PIL cannot tell (imageio may still read the file)."""
    import warnings

    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with imageio
        return None
    try:
        with warnings.catch_warnings():  # DecompressionBombWarning: our own guard follows
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                w, h = im.size
                bands = 3 if im.mode in ("P", "PA") else len(im.getbands())
                return int(h), int(w), bands, int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # noqa: BLE001 - PIL raises many types for files it does not know
        return None


def _load_image(p: Path, size: int | None) -> Target:
    import warnings

    import imageio.v3 as iio

    from ..grid import check_memory

    notes: list[str] = []
    head = _image_header(p)
    if head is not None:
        h, w, bands, frames = head
        if size is None:
            _check_points(h * w * min(bands, 3), p)
        # decoded pixels (up to 8 bytes each: 16-bit or float) + a float32 copy + the tensor
        check_memory(h * w * bands * 16.0, f"decoding {p.name} ({h}x{w}, {bands} channel(s))", "image (resample it)")
    try:
        with warnings.catch_warnings():  # imageio's plugin probing warns about legacy plugins
            warnings.simplefilter("ignore")
            img = np.asarray(iio.imread(p, index=0) if head is not None and head[3] > 1 else iio.imread(p))
    except Exception as exc:  # imageio raises many types for unreadable files
        raise TargetError(f"{p}: cannot read as an image ({_first_line(exc)})") from None
    if head is not None and head[3] > 1:
        notes.append(f"{p.name} holds {head[3]} frames; the first one is used")
    elif img.ndim == 4 or (img.ndim == 3 and img.shape[0] > 1 and img.shape[-1] not in (1, 2, 3, 4)
                           and p.suffix.lower() == ".gif"):  # fmt: skip
        notes.append(f"{p.name} holds {img.shape[0]} frames; the first one is used")
        img = img[0]  # first frame of an animation / a multi-page file
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4):
        raise TargetError(f"{p}: unsupported image shape {list(img.shape)}; expected H x W (x 1/3/4)")
    h, w = img.shape[:2]
    if min(h, w) < 2:
        raise TargetError(f"{p}: image is {h}x{w}; at least 2x2 pixels are needed")
    if size is None:
        _check_points(h * w * min(img.shape[-1], 3), p)
    if img.dtype == np.uint8:
        x = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        x = img.astype(np.float32) / 65535.0
    elif img.dtype == bool:
        x = img.astype(np.float32)
    elif np.issubdtype(img.dtype, np.floating):
        x = img.astype(np.float32)
        if not np.isfinite(x).all():
            raise TargetError(f"{p}: image holds NaN/Inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:  # a float image is taken as [0, 1] data; anything else is rescaled, and said
            if hi == lo:
                raise TargetError(f"{p}: float image holds the single value {lo:g}, outside [0, 1]")
            x = (x - lo) / (hi - lo)
            notes.append(f"float image values in [{lo:.6g}, {hi:.6g}] (outside [0, 1]) rescaled linearly to [0, 1]")
    else:
        raise TargetError(f"{p}: unsupported pixel type {img.dtype}; expected 8- or 16-bit unsigned, bool or float")
    if x.shape[-1] == 2:  # gray + alpha
        x = x[..., :1]
    elif x.shape[-1] == 4:  # RGBA -> RGB (alpha dropped, not composited)
        x = x[..., :3]
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]  # 1 x C x H x W
    if size is not None:
        _check_points(size * size * t.shape[1], p)
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=True,
                                            antialias=size < max(h, w))  # fmt: skip
        t = t.clamp(0, 1)
    _check_points(t.shape[2] * t.shape[3] * t.shape[1], p)
    c, hh, ww = t.shape[1:]
    values = t[0].permute(1, 2, 0).reshape(hh * ww, c).contiguous()
    return Target("image", str(p), file_sha256(p), (int(hh), int(ww)), values, notes=notes)


#: Names tried, in order, for the occupancy array of an .npz holding several.
NPZ_KEYS = ("occupancy", "occ", "voxels", "volume", "data")


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], Any]:
    """(shape, dtype) from an .npy stream's header (``numpy.lib.format``), leaving the data unread."""

    fmt = np.lib.format
    version = fmt.read_magic(f)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0  # 3.0: 2.0's layout
    shape, _fortran, dtype = read(f)
    return tuple(int(s) for s in shape), dtype


def _volume_header(p: Path) -> tuple[str | None, tuple[int, ...], Any]:
    """(npz key or None, shape, dtype) of the occupancy array, read from headers only."""
    import zipfile

    if p.suffix.lower() == ".npy":
        with open(p, "rb") as f:
            return None, *_npy_header(f)
    with zipfile.ZipFile(p) as z:
        keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        key = next((k for k in NPZ_KEYS if k in keys), None)
        if key is None and len(keys) == 1:
            key = keys[0]
        if key is None:
            raise TargetError(f"{p}: .npz holds {keys}; name the array 'occupancy' (or store just one array)")
        with z.open(key + ".npy") as f:
            return key, *_npy_header(f)


def _load_volume(p: Path, size: int | None) -> Target:
    import zipfile

    from ..grid import check_memory

    try:
        key, shape, dtype = _volume_header(p)
    except TargetError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy/zipfile raise many types for damaged files
        raise TargetError(f"{p}: cannot read as .npy/.npz ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise TargetError(f"{p}: the array holds Python objects (dtype {dtype}); store a bool or 0/1 number array")
    if len(shape) != 3:
        raise TargetError(f"{p}: occupancy grid must be 3-D, got shape {list(shape)}")
    if min(shape) < 2:
        raise TargetError(f"{p}: occupancy grid {list(shape)} needs at least 2 voxels per axis")
    n = math.prod(shape)
    if size is None:
        _check_points(n, p)
    check_memory(n * (dtype.itemsize + 8.0), f"decoding {p.name} ({'x'.join(map(str, shape))} voxels)",
                 "volume (resample it)")  # fmt: skip
    try:
        if key is None:
            vol = np.load(p, allow_pickle=False)
        else:
            with np.load(p, allow_pickle=False) as data:
                vol = data[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:  # e.g. a bad CRC, truncated data
        raise TargetError(f"{p}: cannot read as .npy/.npz ({_first_line(exc)})") from None
    if vol.dtype != bool:
        if not np.issubdtype(vol.dtype, np.number) or not np.isin(vol, (0, 1)).all():
            raise TargetError(f"{p}: occupancy grid must be boolean or hold only 0 and 1 (dtype {vol.dtype})")
    t = torch.from_numpy(np.ascontiguousarray(vol.astype(np.float32)))
    if size is not None:
        _check_points(size**3, p)
        t = torch.nn.functional.interpolate(t[None, None], size=(size,) * 3, mode="nearest")[0, 0]
    _check_points(t.numel(), p)
    return Target("occupancy", str(p), file_sha256(p), tuple(int(s) for s in t.shape), t.reshape(-1, 1).contiguous())


def _check_points(n: int, p: Path) -> None:
    if n > MAX_POINTS:
        gib = n * 4 * 3 / 2**30
        raise TargetError(f"{p}: {n:,} target values (~{gib:.1f} GiB as float32 with predictions and gradients) "
                          f"exceed the limit of {MAX_POINTS:,}; resample with --size")  # fmt: skip


def match_channels(values: torch.Tensor, channels: int) -> tuple[torch.Tensor, str | None]:
    """Target values (N x C) as ``channels`` channels: gray -> RGB repeats, RGB -> gray is ITU-R 601 luma.

    Returns (values, note or None); raises TargetError for any other mismatch."""

    c = values.shape[1]
    if c == channels:
        return values, None
    if c == 1 and channels == 3:
        return values.expand(-1, 3).contiguous(), "gray target repeated to RGB"
    if c == 3 and channels == 1:
        return to_luma(values), "RGB target converted to gray (ITU-R 601 luma)"
    raise TargetError(f"a target with {c} channel(s) does not fit a model with {channels} output(s)")


def fit_to_model(tgt: Target, in_features: int, out_features: int) -> str | None:
    """Check ``tgt``'s dimension against the model's input and match its channels to the outputs in place
    (``match_channels``); returns the conversion note or None."""
    if tgt.dim != in_features:
        raise TargetError(f"{tgt.path}: a {tgt.dim}-D target does not fit a model with {in_features}-D input")
    tgt.values, note = match_channels(tgt.values, out_features)
    return note


def iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of ``sigmoid(logits) > threshold`` (i.e. logits > 0 at 0.5) and target."""

    pred = torch.sigmoid(logits.detach().to(torch.float64)) > threshold
    truth = target > 0.5
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union


def metric(kind: str, pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR (images, dB) or IoU (occupancy, in [0, 1]); other kinds: ``inrdiag.signals.kinds.metric``."""
    if kind == "image":
        return psnr(pred, target)
    if kind == "occupancy":
        return iou(pred, target)
    from ..signals.kinds import metric as signal_metric

    return signal_metric(kind, pred, target)


METRIC_NAME = {"image": "PSNR", "occupancy": "IoU", "audio": "PSNR", "video": "PSNR", "sdf": "IoU"}
