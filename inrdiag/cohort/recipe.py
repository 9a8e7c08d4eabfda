"""What a cohort model is and how it is trained: ``CohortRecipe`` and its defaults (the CLI's too)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from ..errors import InrdiagError
from ..seeds import check_seed

BACKBONES = ("siren", "ff")
#: Adam learning rates by backbone: STRAINER's 1e-4 for SIREN; 1e-3 for the Fourier-feature ReLU MLP.
DEFAULT_LR = {"siren": 1e-4, "ff": 1e-3}
DEFAULT_BACKBONE = "siren"
DEFAULT_DEPTH = 4
DEFAULT_WIDTH = 128
#: Images are resized to DEFAULT_SIZE x DEFAULT_SIZE.
DEFAULT_SIZE = 64
#: Joint training steps (full batch).
DEFAULT_STEPS = 1000
#: Freeze sweeps: fitting steps per held-out image and freeze depth; images held out of the folder.
DEFAULT_SWEEP_STEPS = 300
DEFAULT_HOLDOUT = 2


class CohortError(InrdiagError):
    """A cohort folder, recipe or checkpoint that cannot be used."""


@dataclass
class CohortRecipe:
    """How a cohort model is built and trained (stored in the checkpoint's provenance)."""

    #: siren (sine, w0 = 30, official init) or ff (Gaussian Fourier features + ReLU MLP).
    backbone: str = DEFAULT_BACKBONE
    #: Hidden layers; the network has depth + 1 linear layers.
    depth: int = DEFAULT_DEPTH
    width: int = DEFAULT_WIDTH
    #: K, the number of linear layers in the shared encoder (1..depth).
    shared_layers: int = DEFAULT_DEPTH
    #: Images are resized to size x size.
    size: int = DEFAULT_SIZE
    steps: int = DEFAULT_STEPS
    #: Adam learning rate (None: by backbone, see DEFAULT_LR).
    lr: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise CohortError(f"unknown --backbone {self.backbone!r}; allowed: {', '.join(BACKBONES)}")
        for name in ("depth", "width", "shared_layers", "size", "steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise CohortError(f"--{name.replace('_', '-')} must be an integer, got {v!r}")
        if self.depth < 1 or self.width < 1:
            raise CohortError(f"--depth and --width must be >= 1, got {self.depth} and {self.width}")
        if not 1 <= self.shared_layers <= self.depth:
            raise CohortError(
                f"--shared-layers {self.shared_layers} does not fit a network of {self.depth} hidden layers: "
                f"choose 1..{self.depth} (the head keeps at least the output layer)"
            )
        if self.size < 2:
            raise CohortError(f"--size must be at least 2, got {self.size}")
        if self.steps < 0:
            raise CohortError(f"--steps must be >= 0, got {self.steps}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.backbone]
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, numbers.Real)
            or not (self.lr > 0 and math.isfinite(self.lr))
        ):
            raise CohortError(f"--lr must be a positive number, got {self.lr}")
        check_seed(self.seed, "seed (--seed)")

    @property
    def learning_rate(self) -> float:
        """``lr`` after ``__post_init__`` (never None)."""
        assert self.lr is not None
        return float(self.lr)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
