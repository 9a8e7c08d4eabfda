"""Evaluating a network on many coordinates without holding every activation at once."""

from __future__ import annotations

import torch
from torch import nn

#: Rows per forward pass when a whole grid is evaluated (fit metrics, reconstructions, meshes).
EVAL_CHUNK = 65536


def predict(model: nn.Module, coords: torch.Tensor, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """Model output (N x C) on ``coords`` (N x d) in chunks, no gradients, in the model's current mode."""
    with torch.no_grad():
        return torch.cat([model(coords[i : i + chunk]) for i in range(0, coords.shape[0], chunk)])
