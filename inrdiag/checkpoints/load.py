"""``load(path)``: any supported checkpoint -> a CoordMLP in eval mode, with a record of how."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError, InrdiagError, SpecError
from ..models.mlp import CoordMLP
from ..models.spec import ArchSpec, linear_key
from .layouts import LoadOptions, LoadRecord, resolve
from .read import read_checkpoint


@dataclass(kw_only=True)
class Loaded(LoadRecord):
    """A loaded model and everything ``inrdiag info`` reports about it (the ``LoadRecord`` of its resolution:
    ``layout``, ``layer_keys``, ``sources``, ``tensors``, ``provenance``, cohort fields, ``notes``)."""

    #: The rebuilt CoordMLP, in eval mode.
    model: CoordMLP
    path: str
    file_format: str
    #: Keys of used tensors holding NaN or Inf.
    nonfinite: list[str] = field(default_factory=list)

    @property
    def spec(self) -> ArchSpec:
        return self.model.spec

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "path": self.path,
            "file_format": self.file_format,
            "layout": self.layout,
            "arch": spec.to_dict(),
            "sources": self.sources,
            "layers": [
                {"index": k, "name": key, "out_features": o, "in_features": i}
                for k, (key, (o, i)) in enumerate(zip(self.layer_keys, spec.layer_shapes))
            ],
            "parameters": self.model.num_parameters,
            "tensors": [t.to_dict() for t in self.tensors],
            "unused_tensors": [t.key for t in self.tensors if not t.used],
            "nonfinite": self.nonfinite,
            "cohort": None if self.heads is None else {
                "heads": self.heads, "head": self.head, "shared_layers": self.shared_layers,
                "names": self.head_names,
            },
            "provenance": self.provenance,
            "notes": self.notes,
        }  # fmt: skip


def load(path: str | os.PathLike[str], options: LoadOptions | None = None, **flags: Any) -> Loaded:
    """Load a checkpoint; ``flags`` (activation=, w0=, ...) are the same as the CLI's.

    The model keeps float64 weights in float64; anything else becomes float32.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InrdiagError(f"load() needs a file path (str or os.PathLike), got {type(path).__name__}")
    if options is not None and not isinstance(options, LoadOptions):
        raise SpecError(f"options must be a LoadOptions, got {type(options).__name__}")
    if options is not None and flags:
        raise SpecError("pass either options= or keyword flags, not both")
    try:
        opts = options or LoadOptions(**flags)
    except TypeError:
        known = sorted(LoadOptions.__dataclass_fields__)
        raise SpecError(f"unknown load flags {sorted(set(flags) - set(known))}; known: {known}") from None
    raw = read_checkpoint(path)
    res = resolve(raw, opts)
    # float64 stays float64; float16/bfloat16/float32 compute in float32 (the dtype policy notes it).
    dtype = torch.float64 if res.state[f"{linear_key(0)}.weight"].dtype == torch.float64 else torch.float32
    model = CoordMLP(res.spec).to(dtype)
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in res.state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - resolve() already checked names and shapes
        raise CheckpointError(
            f"{path}: weights do not fit the inferred architecture ({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    nonfinite = [k for k, v in res.state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return Loaded(model=model, path=str(path), file_format=raw.file_format, nonfinite=nonfinite, **res.record())
