"""Keys no single codebase owns: ``layers.{i}`` (nerfstudio's ``MLP`` and many others), ``nn.Sequential``
(``{i}.weight``) and any other ordered 2-D weights. They decide the shapes only: the hidden and output
activations are asked (``--activation``, ``--out-activation``)."""

from __future__ import annotations

from .codebases import SRC_NS_MLP
from .entry import Layout
from .keys import numbered

#: Why generic keys decide no activation (the refusal quotes it).
GENERIC_WHY = {"activation": "no codebase is known by these keys; the hidden activation is not stored",
               "out_activation": "an output activation module has no weights, so the keys cannot show it"}  # fmt: skip

LAYERS = Layout(
    name="layers",
    label="layers.{i} (nerfstudio MLP and others)",
    codebase="nerfstudio MLP (activation a constructor argument) and many others",
    checked=(SRC_NS_MLP,),
    matches=lambda chain: numbered(chain.full, "layers", ()),
    why=dict(GENERIC_WHY, activation="layers.{i} is written by nerfstudio's MLP (activation a constructor argument) "
                                     "and many others"),
    contiguous=False,
)  # fmt: skip

SEQUENTIAL = Layout(
    name="sequential",
    label="nn.Sequential ({i}.weight)",
    codebase="torch nn.Sequential (Linear modules between weight-free activations)",
    checked=(),
    matches=lambda chain: all(p.isdigit() for p in chain.paths),
    why=GENERIC_WHY,
    contiguous=False,
)

GENERIC = Layout(
    name="generic",
    label="generic (ordered 2-D weights)",
    codebase="any (the 2-D weights ordered by module path)",
    checked=(),
    matches=lambda chain: True,
    why=GENERIC_WHY,
    contiguous=False,
)
