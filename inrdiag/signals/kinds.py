"""Loss, metric and metric name of every target kind (the fitting loop and the scorers dispatch here).

=========== ======================== ============================================ =====================
kind        values (N x C)           loss                                         metric
=========== ======================== ============================================ =====================
image       [0, 1]                   MSE                                          PSNR on [0, 1] (dB)
occupancy   {0, 1}                   BCE with logits                              IoU of logit > 0
audio       waveform in [-1, 1]      MSE                                          PSNR, peak 1 (dB)
video       [0, 1]                   MSE                                          PSNR on [0, 1] (dB)
sdf         truncated SDF, inside<0  L1 of clamp(f, -tau, tau) - y (DeepSDF)      IoU of f < 0 vs y < 0
=========== ======================== ============================================ =====================

Audio PSNR is ``-10 log10(mean((clip(f, -1, 1) - y)^2))``: the peak of a full-scale waveform is 1, so
it is the same formula as for images (and what ``ntk --target`` predicts). SNR (scale-free) is
``10 log10(sum y^2 / sum (clip(f) - y)^2)`` and reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..metrics import psnr
from .errors import TargetError

KINDS = ("image", "occupancy", "audio", "video", "sdf")
METRIC_NAME = {"image": "PSNR", "occupancy": "IoU", "audio": "PSNR", "video": "PSNR", "sdf": "IoU"}
#: Truncation tau of SDF targets and of their loss (DeepSDF's delta = 0.1, here in the [-1, 1]^3 cube).
SDF_TRUNCATION = 0.1


def check_kind(kind: str) -> str:
    """``kind`` itself if it is one of ``KINDS``, else a TargetError naming the allowed kinds."""
    if kind not in KINDS:
        raise TargetError(f"unknown target kind {kind!r}; allowed: auto, {', '.join(KINDS)}")
    return kind


def clamped_l1(pred: torch.Tensor, target: torch.Tensor, tau: float = SDF_TRUNCATION) -> torch.Tensor:
    """DeepSDF's loss: ``mean |clamp(pred, -tau, tau) - clamp(target, -tau, tau)|``."""
    return (pred.clamp(-tau, tau) - target.clamp(-tau, tau)).abs().mean()


def loss_function(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss ``loss(pred, target) -> scalar tensor`` of ``kind``."""
    check_kind(kind)
    if kind == "occupancy":
        return F.binary_cross_entropy_with_logits
    if kind == "sdf":
        return clamped_l1
    return F.mse_loss


def _mse(pred: torch.Tensor, target: torch.Tensor, lo: float, hi: float) -> float:
    return float(torch.mean((pred.detach().clamp(lo, hi).to(torch.float64) - target.to(torch.float64)) ** 2))


def snr(pred: torch.Tensor, target: torch.Tensor, lo: float = -1.0, hi: float = 1.0) -> float:
    """``10 log10(sum target^2 / sum (clip(pred) - target)^2)`` in dB (inf when exact, -inf for a silent target)."""
    err = float(torch.sum((pred.detach().clamp(lo, hi).to(torch.float64) - target.to(torch.float64)) ** 2))
    sig = float(torch.sum(target.to(torch.float64) ** 2))
    if err == 0:
        return math.inf
    return -math.inf if sig == 0 else 10.0 * math.log10(sig / err)


def sign_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """IoU of the insides ``pred < 0`` and ``target < 0`` (SDF convention: negative inside)."""
    p = pred.detach() < 0
    t = target < 0
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def metric(kind: str, pred: torch.Tensor, target: torch.Tensor) -> float:
    """The metric of ``kind`` (see the table above) for predictions ``pred`` and values ``target`` (N x C)."""
    check_kind(kind)
    if kind == "occupancy":
        from ..fitting.targets import iou

        return iou(pred, target)
    if kind == "sdf":
        return sign_iou(pred, target)
    if kind == "audio":
        return psnr(pred, target, -1.0, 1.0)
    return psnr(pred, target)


def frame_psnr(pred: torch.Tensor, target: torch.Tensor, frames: int) -> list[float]:
    """PSNR of each of ``frames`` equal consecutive blocks of the rows (video: one block per frame, 'ij' order)."""
    n = target.shape[0] // frames
    return [psnr(pred[i * n : (i + 1) * n], target[i * n : (i + 1) * n]) for i in range(frames)]


def grid_from_provenance(provenance: dict[str, Any] | None, in_features: int) -> tuple[int, ...] | None:
    """The fitted target's own grid for ``rank`` when ``--grid`` is not given: audio and video fits (a 1-D
    waveform is far finer than the default 4,096 points; a video is rarely a cube); None otherwise."""
    prov = provenance or {}
    shape = [int(s) for s in prov.get("target_shape") or []]
    if prov.get("target_kind") in ("audio", "video") and len(shape) == in_features and min(shape, default=0) >= 2:
        return tuple(shape)
    return None
