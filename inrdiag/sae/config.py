"""The SAE's configuration, names and defaults: no torch, so the command line can read its defaults
(``inrdiag sae --help``) without importing it."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..errors import InrdiagError
from ..seeds import check_seed

#: What ``SAEConfig.kind`` may be: TopK, or ReLU with an L1 penalty.
KINDS = ("topk", "relu")
#: SAELens's ``architecture`` names for our two kinds (a loaded JumpReLU SAE is "jumprelu").
SAELENS_ARCH = {"topk": "topk", "relu": "standard"}
#: Every architecture a ``SparseAutoencoder`` can have (a BatchTopK file loads as its inference JumpReLU).
ARCHITECTURES = ("topk", "standard", "jumprelu")
WEIGHTS_FILE = "sae_weights.safetensors"
CFG_FILE = "cfg.json"
#: Rows of the most-harmful-atoms table (``inrdiag sae --show``) and of the JSON report's ``most_harmful``.
SHOW_ROWS = 10
JSON_HARMFUL_ROWS = 20
#: Atoms drawn by ``--atoms-png``.
ATOM_MAPS = 16


class SAEError(InrdiagError):
    """A sparse-autoencoder request that cannot be carried out."""


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass
class SAEConfig:
    """How the SAE is built and trained (every field is written to cfg.json)."""

    atoms: int = 4096
    kind: str = "topk"
    k: int = 32
    l1: float = 0.1
    steps: int = 1000
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0
    #: TopK: weight of the auxiliary loss that makes dead atoms predict the residual (0 disables).
    aux_coef: float = 1.0 / 32
    #: Steps without firing after which an atom counts as dead for the auxiliary loss.
    dead_after: int = 100

    def validate(self) -> None:
        """Refuse (SAEError, naming the flag) a value outside what training accepts."""
        if self.kind not in KINDS:
            raise SAEError(f"unknown --kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        for name, flag in (("atoms", "--atoms"), ("k", "--k"), ("steps", "--steps"), ("batch_size", "--batch-size"),
                           ("dead_after", "dead_after")):  # fmt: skip
            if not _is_int(getattr(self, name)):
                raise SAEError(f"{flag} must be an integer, got {getattr(self, name)!r}")
        if self.atoms < 1:
            raise SAEError(f"--atoms must be >= 1, got {self.atoms}")
        if self.kind == "topk" and not 1 <= self.k <= self.atoms:
            raise SAEError(f"--k must be 1..--atoms ({self.atoms}), got {self.k}")
        if self.steps < 1:
            raise SAEError(f"--steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise SAEError(f"--batch-size must be >= 1, got {self.batch_size}")
        for name, flag, lo in (("lr", "--lr", "a positive number"), ("l1", "--l1", ">= 0"),
                               ("aux_coef", "aux_coef", ">= 0")):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise SAEError(f"{flag} must be {lo}, got {v!r}")
        if not self.lr > 0:
            raise SAEError(f"--lr must be a positive number, got {self.lr}")
        if self.l1 < 0:
            raise SAEError(f"--l1 must be >= 0, got {self.l1}")
        if self.aux_coef < 0:
            raise SAEError(f"aux_coef must be >= 0, got {self.aux_coef}")
        if self.dead_after < 1:
            raise SAEError(f"dead_after must be >= 1, got {self.dead_after}")
        try:
            check_seed(self.seed, "--seed")
        except InrdiagError as exc:
            raise SAEError(str(exc)) from None
