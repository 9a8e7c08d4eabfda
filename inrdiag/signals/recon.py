"""``fit --recon FILE`` for every kind, by the file's suffix.

======================= =====================================================================
kind                    suffixes
======================= =====================================================================
image                   .png (8-bit; inrdiag.report.fit), .npy (H x W x C float32)
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


def handles(kind: str, path: str) -> bool:
    """Whether this module writes ``path`` (the PNG of images and occupancy stays in inrdiag.report.fit)."""
    return not (kind in ("image", "occupancy") and Path(path).suffix.lower() == ".png")


class _Negated(nn.Module):
    """``-inner(x)``: an SDF model read as occupancy logits (inside = f < 0 -> positive logit)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.inner(x)


def save_signal_reconstruction(model: nn.Module, target: Target, path: str, force: bool = False) -> None:
    """Write ``model``'s reconstruction of ``target`` to ``path`` in the format its suffix names (table above)."""
    check_recon_suffix(target.kind, path)
    suffix = Path(path).suffix.lower()
    if suffix in (".obj", ".ply", ".stl", ".off"):
        from .mesh import extract_surface

        extract_surface(model, target, path, force)
        return
    model = model.eval()
    out = predict(model, target.coords(dtype=next(model.parameters()).dtype)).to(torch.float64)
    if target.kind == "sdf" and suffix == ".png":  # the slice picture of occupancy, inside = f < 0
        from ..report.fit import save_reconstruction

        occ = Target("occupancy", target.path, target.sha256, target.shape, (target.values < 0).float())
        save_reconstruction(_Negated(model), occ, path, force)
        return
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
