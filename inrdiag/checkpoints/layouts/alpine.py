"""kushalvyas/alpine: ``FFN`` is ``model = ModuleList(PosEncoding(B), Linear, ReLU, ..., Linear)``, keys
``model.{2k+1}`` and the Fourier matrix ``model.0.B`` (kept once more as ``pos_encode.B``).
alpine's ``Strainer`` (``encoder.*`` + ``decoder.{d}.*``) is a cohort (``cohort.py``)."""

from __future__ import annotations

from .codebases import SRC_ALPINE_FFN
from .entry import Chain, Layout
from .keys import numbered


def _ffn(chain: Chain) -> bool:
    if not numbered(chain.full, "model", ()):
        return False
    stem = chain.full[0].rsplit(".", 1)[0]
    return f"{stem}.0.B" in {chain.prefix + k for k in chain.tensors}


FFN = Layout(
    name="alpine-ffn",
    label="alpine FFN (model.0.B + model.{2k+1})",
    codebase="kushalvyas/alpine FFN (Lightning: state_dict.model.*)",
    checked=(SRC_ALPINE_FFN,),
    matches=_ffn,
    fixed={"activation": ("relu", f"layout rule: FFN's hidden nonlinearity is ReLU, {SRC_ALPINE_FFN}"),
           "out_activation": ("none", f"layout rule: FFN(outermost_linear=True) by default, {SRC_ALPINE_FFN}")},
    contiguous=False,
)  # fmt: skip
