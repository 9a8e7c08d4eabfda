"""Match a checkpoint's tensors to a coordinate MLP: ArchSpec + weights, and a record of how.

Every property of the rebuilt architecture comes from one of: inrdiag metadata, a flag, or a
*layout rule* -- a key pattern that only one codebase (and version) writes, together with what
that codebase's code fixes (e.g. the official SIREN repo's ``Sine`` is ``sin(30 x)``). A key
pattern several codebases share decides nothing those codebases do differently: that property is
an ``AmbiguousArchitectureError`` naming the flag that decides it (and ``--model-code``).
``Resolved.sources`` records, per property, where its value came from.

Each recognised layout is one registered ``Layout`` (``registry.LAYOUTS``, by name ``registry.layout``),
in the module of its codebase; docs/loading.md lists them with the public source each was checked
against.

- codebases: ``siren`` (vsitzmann/siren; the ``net.{i}.linear`` keys the SIREN notebook, FINER and WIRE
  share), ``finer`` (FINER's train_image.py dict, PEMLP), ``siren_pytorch`` (lucidrains), ``alpine`` (FFN),
  ``generic`` (``layers.{i}``, ``nn.Sequential``, anything else), ``own`` (inrdiag's own files),
  ``cohort`` (every cohort rule: inrdiag cohort files, ``encoder.*`` + ``decoder.{d}.*``);
- matching: ``entry`` (``Layout``, ``Chain``), ``registry`` (the order, ``detect``), ``keys`` (key paths);
- deciding: ``encodings`` (Fourier matrices, positional-encoding conventions), ``properties``
  (activations and w0 from flags or the layout), ``structure`` (refusals: gaps, shapes, unexplained
  tensors, dtypes; batch norm), ``resolve`` (``resolve``), ``records`` (``Resolved``, ``TensorInfo``),
  ``options`` (``LoadOptions``), ``codebases`` (the source files checked).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .options import LoadOptions

if TYPE_CHECKING:
    from .entry import Chain, Layout
    from .records import LoadRecord, Resolved, TensorInfo
    from .registry import LAYOUTS, detect, layout
    from .resolve import resolve

__all__ = ["LAYOUTS", "Chain", "Layout", "LoadOptions", "LoadRecord", "Resolved", "TensorInfo", "detect", "layout",
           "resolve"]  # fmt: skip

#: The rest loads on first use (PEP 562): the matching imports torch, ``LoadOptions`` does not, so
#: ``inrdiag.LoadOptions(...)`` costs no torch import.
_LAZY = {"Chain": "entry", "Layout": "entry", "LoadRecord": "records", "Resolved": "records",
         "TensorInfo": "records", "LAYOUTS": "registry", "detect": "registry", "layout": "registry",
         "resolve": "resolve"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    # kept as the package's attribute: for ``resolve`` this replaces the submodule of that name, which the
    # import just bound there, as the eager import did
    globals()[name] = value
    return value
