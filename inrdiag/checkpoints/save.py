"""Write a CoordMLP as an inrdiag ``.safetensors`` file (metadata: format, arch, provenance)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .. import __version__
from ..errors import InrdiagError
from ..files import atomic_write
from ..models.mlp import CoordMLP
from .read import FORMAT_VERSION, METADATA_KEY, _one_line


def save(
    model: CoordMLP,
    path: str | os.PathLike[str],
    provenance: dict[str, Any] | None = None,
    force: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` (a CoordMLP) as one inrdiag ``.safetensors`` file, atomically.

    The metadata key ``inrdiag`` holds ``{"format": 1, "arch": ArchSpec, "provenance": {...}}``,
    so the file loads with no flags. ``tensors`` replaces the model's state dict (cohort files).
    Refuses to overwrite an existing file unless ``force``; ``provenance`` must be plain JSON.
    """
    if not isinstance(model, CoordMLP):
        hint = " (pass loaded.model)" if hasattr(model, "model") and isinstance(model.model, CoordMLP) else ""
        raise InrdiagError(f"save() needs a CoordMLP, got {type(model).__name__}{hint}")
    if provenance is not None and not isinstance(provenance, dict):
        raise InrdiagError(f"provenance must be a dict, got {type(provenance).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise InrdiagError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    prov = {"inrdiag_version": __version__, **(provenance or {})}
    meta = {"format": FORMAT_VERSION, "arch": model.spec.to_dict(), "provenance": prov}
    meta.update(extra_metadata or {})
    try:
        text = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InrdiagError(
            f"provenance must be plain JSON (str, finite numbers, bools, lists, dicts): {_one_line(exc)}"
        ) from None
    state = tensors if tensors is not None else model.state_dict()
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={METADATA_KEY: text}), force)
