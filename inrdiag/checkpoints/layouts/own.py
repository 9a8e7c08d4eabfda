"""inrdiag's own files: with metadata (``resolve_own``: the architecture is stored, flags override it),
and a bare CoordMLP state dict without metadata (the ``STATE_DICT`` entry, ``linears.{k}``).
Cohort files' heads: ``cohort.py``."""

from __future__ import annotations

from ...models.spec import ArchSpec
from ..read import RawCheckpoint
from .cohort import own_heads
from .entry import Layout
from .generic import GENERIC_WHY
from .keys import numbered
from .options import LoadOptions
from .properties import apply_overrides
from .records import Resolved
from .structure import dtype_policy

STATE_DICT = Layout(
    name="inrdiag-state-dict",
    label="inrdiag state dict (linears.{k}, no metadata)",
    codebase="inrdiag CoordMLP.state_dict() saved without inrdiag's metadata",
    checked=("inrdiag/models/mlp.py",),
    matches=lambda chain: numbered(chain.full, "linears", ()),
    why=GENERIC_WHY,
)


def resolve_own(raw: RawCheckpoint, opts: LoadOptions) -> Resolved:
    """Metadata was validated and the tensors checked against it by ``read_checkpoint``."""
    meta = raw.metadata or {}
    spec = ArchSpec.from_dict(meta["arch"])
    props = ("activation", "w0", "w0_hidden", "out_activation", "encoding", "bias", "batchnorm", "shapes")
    sources = {f: "metadata" for f in props}
    if spec.encoding == "positional":
        sources["pe_convention"] = (
            "metadata" if "pe_convention" in meta["arch"] else "metadata (format 1 default: inrdiag)"
        )
    if spec.encoding == "fourier":
        sources["ff_convention"] = "metadata"
    apply_overrides(spec, opts, sources)
    state, infos, cohort = own_heads(meta, raw.tensors, opts, sources)
    notes = dtype_policy(state, raw.path)
    return Resolved(
        spec=spec, state=state, layout="inrdiag" + (" cohort" if cohort else ""), layer_keys=spec.layer_keys(),
        sources=sources, tensors=infos, provenance=dict(meta.get("provenance") or {}), notes=notes,
        **(cohort.fields() if cohort else {}),
    )  # fmt: skip
