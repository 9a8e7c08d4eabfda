"""Cohort checkpoint files: which tensors are the shared encoder, how a cohort is laid out in one
inrdiag ``.safetensors`` file, and the one reader of such files (``read_cohort``).

Layout: the inrdiag metadata carries ``"cohort": {"shared_layers": K, "heads": H, "names": [...]}``;
the encoder's tensors (``encoding.*``, ``linears.{k}.*`` and ``norms.{k}.*`` for k < K) are stored
once under their CoordMLP names, head d's own tensors (every other key) under ``heads.{d}.{key}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..checkpoints.layouts.cohort import split_heads
from ..checkpoints.read import RawCheckpoint, check_declared_shapes, read_checkpoint, validate_metadata
from ..models.spec import ArchSpec, is_encoder_key
from .recipe import CohortError, CohortRecipe


def cohort_state(models: list[torch.nn.Module], K: int) -> dict[str, torch.Tensor]:
    """Tensors of a cohort file: the encoder (from ``models[0]``) under CoordMLP names, head d under
    ``heads.{d}.``."""
    state = {k: v for k, v in models[0].state_dict().items() if is_encoder_key(k, K)}
    for d, m in enumerate(models):
        state.update({f"heads.{d}.{k}": v for k, v in m.state_dict().items() if not is_encoder_key(k, K)})
    return state


@dataclass
class CohortFile:
    """What an inrdiag cohort checkpoint holds, validated (metadata, shapes, head layout)."""

    path: str
    spec: ArchSpec
    #: K: linear layers in the shared encoder.
    shared_layers: int
    #: The training image of each head (empty when the file does not name them).
    names: list[str]
    #: The encoder's tensors under CoordMLP names.
    encoder: dict[str, torch.Tensor]
    #: Head d's own tensors under CoordMLP names (``heads[d]``).
    heads: list[dict[str, torch.Tensor]]
    provenance: dict[str, Any] = field(default_factory=dict)

    def head_state(self, d: int) -> dict[str, torch.Tensor]:
        """The full CoordMLP state dict of head ``d``: the encoder's tensors and the head's own."""
        if not 0 <= d < len(self.heads):
            raise CohortError(f"head {d} out of range: this cohort checkpoint has heads 0..{len(self.heads) - 1}")
        return {**self.encoder, **self.heads[d]}

    def recipe(self) -> CohortRecipe:
        """The training recipe recorded in the provenance (``provenance.recipe``)."""
        rec = self.provenance.get("recipe")
        if not isinstance(rec, dict):
            raise CohortError(f"{self.path}: the provenance records no cohort recipe (made by `inrdiag cohort-train`?)")
        try:
            return CohortRecipe(**rec)
        except TypeError as exc:
            raise CohortError(f"{self.path}: unreadable cohort recipe ({exc})") from None


def read_cohort(source: str | os.PathLike[str] | RawCheckpoint) -> CohortFile:
    """Read and validate an inrdiag cohort checkpoint (a path, or a file already read by
    ``read_checkpoint``): its metadata schema, every declared tensor with its shape, and the head
    layout. Raises CohortError when the file is not a cohort checkpoint, CheckpointError when it is
    malformed."""
    raw = source if isinstance(source, RawCheckpoint) else read_checkpoint(source)
    meta = raw.metadata
    if not meta or "cohort" not in meta:
        raise CohortError(f"{raw.path} is not an inrdiag cohort checkpoint (made by `inrdiag cohort-train`)")
    validate_metadata(meta, raw.path)
    check_declared_shapes(meta, raw.tensors, raw.path)
    spec = ArchSpec.from_dict(meta["arch"])
    cohort = meta["cohort"]
    K, H = int(cohort["shared_layers"]), int(cohort["heads"])
    encoder, heads = split_heads(raw.tensors, H)  # the layout's one reading of head keys
    return CohortFile(path=raw.path, spec=spec, shared_layers=K, names=list(cohort.get("names") or []),
                      encoder=encoder, heads=heads, provenance=dict(meta.get("provenance") or {}))  # fmt: skip
