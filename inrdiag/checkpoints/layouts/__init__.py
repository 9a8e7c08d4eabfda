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

from .entry import Chain, Layout
from .options import LoadOptions
from .records import LoadRecord, Resolved, TensorInfo
from .registry import LAYOUTS, detect, layout
from .resolve import resolve

__all__ = ["LAYOUTS", "Chain", "Layout", "LoadOptions", "LoadRecord", "Resolved", "TensorInfo", "detect", "layout",
           "resolve"]  # fmt: skip
