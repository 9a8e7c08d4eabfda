"""``fit --recon FILE`` for every kind, by the file's suffix.

======================= =====================================================================
kind                    suffixes
======================= =====================================================================
image                   .png (8-bit), .npy (H x W x C float32)
occupancy, sdf          .obj/.ply/.stl/.off (marching cubes at level 0), .png (3 slices), .npy
audio                   .wav (16-bit PCM at the target's rate), .npy (N float32)
video                   .gif (8-bit frames), .npy (T x H x W x C float32)
======================= =====================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import TargetError
from ..files import atomic_write
from ..fitting.targets import Target
from ..models.predict import predict

RECON_SUFFIXES = {
    "image": (".png", ".npy"),
    "occupancy": (".obj", ".ply", ".stl", ".off", ".png", ".npy"),
    "sdf": (".obj", ".ply", ".stl", ".off", ".png", ".npy"),
    "audio": (".wav", ".npy"),
    "video": (".gif", ".npy"),
}


def check_recon_suffix(kind: str, path: str) -> None:
    allowed = RECON_SUFFIXES.get(kind, (".png",))
    if Path(path).suffix.lower() not in allowed:
        raise TargetError(f"--recon {path}: a {kind} reconstruction is written as {' or '.join(allowed)}")


class _Negated(nn.Module):
    """``-inner(x)``: an SDF model read as occupancy logits (inside = f < 0 -> positive logit)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.inner(x)


def _save_png(model: nn.Module, target: Target, path: str, force: bool) -> None:
    """Images: the reconstruction as an 8-bit PNG. Volumes: 3 slices along axis 0 at 1/4, 1/2, 3/4,
    target (top row) above the reconstruction thresholded at 0.5 (bottom row), one PNG."""
    import imageio.v3 as iio

    model = model.eval()
    out = predict(model, target.coords(dtype=next(model.parameters()).dtype))
    if target.kind == "image":
        img = out.clamp(0, 1).reshape(*target.shape, target.channels).to(torch.float64).numpy()
        if img.shape[-1] == 1:
            img = img[..., 0]
    else:
        pred = (out[:, 0] > 0).reshape(target.shape).numpy()
        truth = (target.values[:, 0] > 0.5).reshape(target.shape).numpy()
        n = target.shape[0]
        idx = [n // 4, n // 2, (3 * n) // 4]
        gap = np.full((target.shape[1], 2), 0.5)
        rows = []
        for vol in (truth, pred):
            parts = []
            for i in idx:
                parts += [vol[i].astype(np.float64), gap]
            rows.append(np.concatenate(parts[:-1], axis=1))
        img = np.concatenate([rows[0], np.full((2, rows[0].shape[1]), 0.5), rows[1]], axis=0)
    data = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    atomic_write(path, lambda tmp: iio.imwrite(tmp, data, extension=".png"), force)


def save_signal_reconstruction(model: nn.Module, target: Target, path: str, force: bool = False) -> None:
    """Write ``model``'s reconstruction of ``target`` to ``path`` in the format its suffix names (table above)."""
    check_recon_suffix(target.kind, path)
    suffix = Path(path).suffix.lower()
    if suffix in (".obj", ".ply", ".stl", ".off"):
        from .mesh import extract_surface

        extract_surface(model, target, path, force)
        return
    if suffix == ".png" and target.kind in ("image", "occupancy"):
        _save_png(model, target, path, force)
        return
    if target.kind == "sdf" and suffix == ".png":  # the slice picture of occupancy, inside = f < 0
        occ = Target("occupancy", target.path, target.sha256, target.shape, (target.values < 0).float())
        _save_png(_Negated(model), occ, path, force)
        return
    model = model.eval()
    out = predict(model, target.coords(dtype=next(model.parameters()).dtype)).to(torch.float64)
    if target.kind == "audio" and suffix == ".wav":
        from .audio import write_wav

        meta = target.meta or {}
        rate = meta.get("effective_sample_rate") or meta.get("sample_rate")
        if rate is None:
            raise TargetError(f"--recon {path}: the audio target has no sample rate to write the .wav at")
        write_wav(path, out[:, 0].numpy(), float(rate), force)
        return
    grid = out.reshape(*target.shape, out.shape[1]).numpy().astype(np.float32)
    if target.kind == "audio":
        grid = grid[:, 0]
    from .video import save_npy, write_video

    if target.kind == "video":
        write_video(path, grid, force)
        return
    atomic_write(path, lambda tmp: save_npy(tmp, grid), force)
