"""What a resolution records: ``TensorInfo`` per tensor of the file, ``LoadRecord`` (how the file was
matched: shared by ``Resolved`` and ``inrdiag.Loaded``), ``Resolved`` (an ArchSpec and its state dict)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ...models.spec import ArchSpec


@dataclass
class TensorInfo:
    """One tensor of the file: its key, shape, dtype, whether the model uses it and as what."""

    key: str
    shape: list[int]
    dtype: str
    used: bool
    role: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def info(key: str, t: torch.Tensor, used: bool, role: str) -> TensorInfo:
    """``TensorInfo`` of tensor ``t`` (any shape) stored under ``key``."""
    return TensorInfo(key, list(t.shape), str(t.dtype).replace("torch.", ""), used, role)


@dataclass(kw_only=True)
class LoadRecord:
    """How a checkpoint was matched to a CoordMLP (each field defined once, for ``Resolved`` and ``Loaded``)."""

    #: The layout's label (``Layout.label``; ``inrdiag`` / ``inrdiag cohort`` for inrdiag's own files).
    layout: str
    #: The file's module path of each linear layer, inlet first (CoordMLP's ``linears.{k}``).
    layer_keys: list[str]
    #: property -> where its value came from (metadata, a flag, a layout rule, the shapes).
    sources: dict[str, str]
    #: Every tensor of the file, used or not, and every skipped entry.
    tensors: list[TensorInfo]
    provenance: dict[str, Any] = field(default_factory=dict)
    #: Cohort checkpoints: number of heads, the selected one, encoder depth, the heads' image names.
    heads: int | None = None
    head: int | None = None
    shared_layers: int | None = None
    head_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The ``LoadRecord`` fields as keyword arguments (to build a ``Loaded`` from a ``Resolved``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(LoadRecord)}


@dataclass(kw_only=True)
class Resolved(LoadRecord):
    """An ArchSpec with the state dict (CoordMLP names, ``ArchSpec.state_shapes``) it goes with, and how
    it was inferred."""

    spec: ArchSpec
    state: dict[str, torch.Tensor]
