"""The registry of layouts: every key layout inrdiag recognises, in the order they are tried.

The first entry whose ``matches`` accepts the chain decides (``detect``); ``generic`` accepts every
chain, so it comes last. The order matters where keys overlap: FINER's ``train_image.py`` dict before
the bare ``net.{i}.linear`` keys it wraps; alpine's ``model.{2k+1}`` + ``model.0.B`` and FINER's
``PEMLP`` before the generic numbered containers. The cohort entry is found from the top-level keys
before any chain is formed (``cohort.foreign_cohort``); it is listed here for lookup by name.

Adding a codebase: write its ``Layout`` in a module of its own (or its family's), with the sources
checked, and insert it in ``LAYOUTS`` before any entry that would also match its keys; add its row
to docs/loading.md (a test checks every name is there).
"""

from __future__ import annotations

from . import alpine, finer, generic, own, siren, siren_pytorch
from .cohort import COHORT
from .entry import Chain, Layout

#: Layouts tried on a file's linear chain, in this order.
LAYOUTS: tuple[Layout, ...] = (
    siren.OFFICIAL,
    finer.TRAIN_IMAGE,
    siren.NET_LINEAR,
    siren.NET_LINEAR_HIDDEN_OUT,
    siren_pytorch.V0_1,
    siren_pytorch.V0_0,
    alpine.FFN,
    finer.PEMLP,
    own.STATE_DICT,
    generic.LAYERS,
    generic.SEQUENTIAL,
    generic.GENERIC,
)

#: Every registered layout by name (the chain layouts and the cohort rule).
BY_NAME: dict[str, Layout] = {entry.name: entry for entry in (*LAYOUTS, COHORT)}


def detect(chain: Chain) -> Layout:
    """The first registered layout whose keys the chain has (``generic`` when no other)."""
    return next(entry for entry in LAYOUTS if entry.matches is not None and entry.matches(chain))


def layout(name: str) -> Layout:
    """The registered layout called ``name`` (KeyError listing the names otherwise)."""
    if name not in BY_NAME:
        raise KeyError(f"no layout {name!r}; registered: {', '.join(BY_NAME)}")
    return BY_NAME[name]
