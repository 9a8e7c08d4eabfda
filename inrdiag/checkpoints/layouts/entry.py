"""``Layout``: one registered key layout (a codebase's, or a generic one), and ``Chain``, what it is matched on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..read import RawCheckpoint
from .options import flag

#: activation -> (w0, w0_hidden, source), or a reason string when that activation's w0 is unknown.
W0Rule = Callable[[str], tuple[float, float, str] | str]


@dataclass
class Chain:
    """What a layout is matched on: the linear chain found in a file, and the file.

    ``paths`` are the module paths of the 2-D weights in chain order, as keys of ``raw.tensors``
    (after unwrapping); ``full`` the same paths as written in the file (the wrapper prefix put back,
    e.g. ``model_state.net.0.linear``)."""

    paths: list[str]
    raw: RawCheckpoint
    full: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.full = [self.prefix + p for p in self.paths]

    @property
    def prefix(self) -> str:
        """The wrapper the state dict was taken from, with its dot ("" for a bare state dict)."""
        return self.raw.wrapper + "." if self.raw.wrapper else ""

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        return self.raw.tensors


def _no_roles(chain: Chain) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Layout:
    """One registered layout: the keys it recognises and what they decide, with the sources checked.

    Every layout maps the file the same way once matched: the chain's k-th linear path becomes
    CoordMLP's ``linears.{k}`` (``models.spec.linear_key``), batch norm after it ``norms.{k}``, a stored
    Fourier matrix ``encoding.B``; the ArchSpec's widths, bias and batch norm come from the shapes.
    What a layout adds is below: the properties its keys decide (``fixed``), the ones they do not
    (``why``: the flag of that name decides, and the refusal says why), and what its codebase's
    code fixes besides (w0, coordinate dimension, extra tensors).
    """

    #: Registry name (``registry.layout(name)``; docs/loading.md's table lists each one).
    name: str
    #: What ``inrdiag info`` shows as the layout, and refusals quote.
    label: str
    #: The codebase(s) writing these keys, and the public source files the rules were checked against.
    codebase: str
    checked: tuple[str, ...]
    #: Whether a chain has this layout's keys; None: not matched on a chain (the cohort rule, see ``cohort.py``).
    matches: Callable[[Chain], bool] | None
    #: property -> (value, source) fixed by a rule unique to one codebase.
    fixed: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    #: property -> why the keys do not decide it (the flag of the same name does).
    why: Mapping[str, str] = field(default_factory=dict)
    #: The w0 of an activation this layout's codebase fixes (see ``W0Rule``); None: flags only.
    w0: W0Rule | None = None
    #: Numbered layers must be contiguous (each index is a module holding a linear layer).
    contiguous: bool = True
    #: Unused tensors this layout explains: key -> role.
    roles: Callable[[Chain], dict[str, str]] = _no_roles
    #: Coordinate dimension fixed by the codebase (FINER's train_image.py: 2).
    in_features: int | None = None

    @property
    def asks(self) -> list[str]:
        """Flags the keys cannot replace (besides a w0 that the chosen activation may need)."""
        return [flag(p) for p in self.why if p not in self.fixed]
