"""Signal-quality measures shared by every command: PSNR and ITU-R 601 luma, defined once."""

from __future__ import annotations

import math

import torch

#: ITU-R BT.601 luma weights (Pillow's ``L`` mode): Y = 0.299 R + 0.587 G + 0.114 B.
LUMA_601 = (0.299, 0.587, 0.114)


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """``10 log10(peak^2 / mse)`` in dB; ``inf`` for an exact fit (mse <= 0)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def psnr(pred: torch.Tensor, target: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> float:
    """PSNR in dB with peak 1 of ``clip(pred, lo, hi)`` against ``target`` (same shape), in float64."""
    err = pred.detach().clamp(lo, hi).to(torch.float64) - target.detach().to(torch.float64)
    return psnr_from_mse(float(torch.mean(err * err)))


def to_luma(values: torch.Tensor) -> torch.Tensor:
    """RGB values (N x 3) as gray (N x 1) by ITU-R 601 luma, in the values' dtype and device."""
    weights = torch.tensor(LUMA_601, dtype=values.dtype, device=values.device)
    return (values @ weights)[:, None].contiguous()
