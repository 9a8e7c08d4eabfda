"""Every cohort rule of loading, in one place: which head of a cohort checkpoint becomes the model.

- inrdiag's own cohort files (``inrdiag cohort-train``): the metadata's ``cohort`` entry; the shared
  encoder's tensors under CoordMLP names, head d's under ``heads.{d}.`` (``own_heads``).
- other codebases' encoder/decoder files: ``encoder.*`` + ``decoder.{d}.*`` (or ``decoders``, ``heads``,
  ``head``), e.g. alpine's ``Strainer`` (``foreign_cohort``, the ``COHORT`` entry).

``--head D`` picks a head (default 0); on any other file it is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import torch

from ...errors import CheckpointError, SpecError
from ..read import RawCheckpoint
from .codebases import SRC_ALPINE_STRAINER
from .entry import Layout
from .keys import linear_paths
from .options import LoadOptions
from .records import TensorInfo, info
from .structure import check_gaps

#: Top-level names of the heads of an encoder/decoder file (with a top-level ``encoder``).
COHORT_HEADS = ("decoder", "decoders", "heads", "head")
#: A head's tensor in an inrdiag cohort file: ``heads.{d}.{CoordMLP key}``.
_HEAD_KEY = re.compile(r"heads\.(\d+)\.(.+)$")

COHORT = Layout(
    name="cohort",
    label="cohort (encoder.* + {key}.{{d}}.*, {heads} heads)",
    codebase="alpine Strainer (sine, omegas=[30]) and any encoder/decoder model",
    checked=(SRC_ALPINE_STRAINER,),
    matches=None,  # found from the top-level keys before any chain (foreign_cohort)
    why={"activation": "encoder.* + decoder.{d}.* is written by alpine's Strainer (sine, omegas=[30]) and by any encoder/decoder model",  # noqa: E501
         "out_activation": "an output activation module has no weights"},
    contiguous=False,
)  # fmt: skip


@dataclass
class Heads:
    """The cohort of a checkpoint: ``heads`` heads sharing ``shared_layers`` encoder layers; ``head`` selected."""

    heads: int
    head: int
    shared_layers: int
    names: list[str] | None = None

    def fields(self) -> dict[str, Any]:
        """As ``LoadRecord`` fields (``heads``, ``head``, ``shared_layers``, ``head_names``)."""
        return {"heads": self.heads, "head": self.head, "shared_layers": self.shared_layers, "head_names": self.names}


def pick_head(requested: int | None, heads: int) -> int:
    """The head ``--head`` asks for (default 0), checked against the number of heads."""
    head = 0 if requested is None else requested
    if not 0 <= head < heads:
        raise SpecError(f"--head {head} out of range: this cohort checkpoint has heads 0..{heads - 1}")
    return head


def _head_source(opts: LoadOptions) -> str:
    return "flag --head" if opts.head is not None else "default (head 0; --head D for another)"


# ---------------------------------------------------------------- inrdiag's own cohort files
def own_heads(
    meta: dict[str, Any], tensors: dict[str, torch.Tensor], opts: LoadOptions, sources: dict[str, str]
) -> tuple[dict[str, torch.Tensor], list[TensorInfo], Heads | None]:
    """An inrdiag file's state dict under CoordMLP names, its tensors' infos and its cohort (None: not one).

    A cohort file's selected head replaces ``heads.{d}.*``; the other heads are listed as not selected."""
    state = dict(tensors)
    cohort = meta.get("cohort")
    if not cohort:
        if opts.head is not None:
            raise SpecError("--head applies to cohort checkpoints only")
        return state, [info(k, t, True, "model") for k, t in state.items()], None
    heads = Heads(cohort["heads"], 0, cohort["shared_layers"], list(cohort.get("names") or []))
    heads.head = head = pick_head(opts.head, heads.heads)
    sources["head"] = _head_source(opts)
    encoder, own = split_heads(state, heads.heads)
    infos = [info(k, t, True, "shared encoder") for k, t in encoder.items()]
    for d, tensors in enumerate(own):
        role = f"head {head}" if d == head else f"head {d} (not selected; --head {d})"
        infos += [info(f"heads.{d}.{k}", t, d == head, role) for k, t in tensors.items()]
    return {**encoder, **own[head]}, infos, heads


def split_heads(
    tensors: dict[str, torch.Tensor], heads: int
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The one reading of an inrdiag cohort file's tensors: the shared encoder's (every key not under
    ``heads.``) and head d's own (``heads.{d}.{key}`` -> ``key``), d in 0..heads-1, in file order.
    The metadata check (``read.check_declared_shapes``) has admitted only such keys."""
    encoder: dict[str, torch.Tensor] = {}
    own: list[dict[str, torch.Tensor]] = [{} for _ in range(heads)]
    for key, t in tensors.items():
        m = _HEAD_KEY.match(key)
        if m is None:
            encoder[key] = t
        else:
            own[int(m.group(1))][m.group(2)] = t
    return encoder, own


# ---------------------------------------------------------------- encoder.* + decoder.{d}.* files
@dataclass
class ForeignCohort:
    """An encoder/decoder file: the chain is the encoder's linear layers, then the selected head's."""

    #: The heads' top-level name (``decoder``, ...) and the numbers d of ``{key}.{d}.*``, sorted.
    key: str
    head_ids: list[int]
    head: int
    encoder: list[str]
    decoder: list[str]
    #: Unselected heads' tensors -> role.
    roles: dict[str, str]
    layout: Layout

    @property
    def paths(self) -> list[str]:
        return self.encoder + self.decoder

    @property
    def prefix(self) -> str:
        """Key prefix of the selected head's tensors."""
        return f"{self.key}.{self.head_ids[self.head]}."

    def heads(self) -> Heads:
        return Heads(len(self.head_ids), self.head, len(self.encoder))

    def check_gaps(self, tensors: dict[str, torch.Tensor], used: set[str], roles: set[str], path: str) -> None:
        """No missing member in the encoder, nor in the selected head (numbered from its own prefix).
        ``used``: keys of the tensors the model uses; ``roles``: keys of the tensors explained otherwise."""
        check_gaps(self.encoder, tensors, used | roles, False, path)
        cut = len(self.prefix)
        sub = {k[cut:]: t for k, t in tensors.items() if k.startswith(self.prefix)}
        check_gaps([p[cut:] for p in self.decoder], sub, {k[cut:] for k in used if k[cut:] in sub}, False, path)


def foreign_cohort(raw: RawCheckpoint, opts: LoadOptions, sources: dict[str, str]) -> ForeignCohort | None:
    """The encoder/decoder cohort of a file without metadata, with its head selected; None when the file
    is not one (then ``--head`` is refused)."""
    tensors = raw.tensors
    tops = {k.split(".", 1)[0] for k in tensors}
    key = next((h for h in COHORT_HEADS if h in tops and "encoder" in tops), None)
    if key is None:
        if opts.head is not None:
            raise SpecError("--head applies to cohort checkpoints (encoder.* + decoder.{d}.*) only")
        return None
    head_ids = sorted({int(m.group(1)) for k in tensors if (m := re.match(rf"{key}\.(\d+)\.", k))})
    if not head_ids:
        raise CheckpointError(f"{raw.path}: 'encoder' and '{key}' found, but no numbered heads '{key}.{{d}}.*'")
    head = pick_head(opts.head, len(head_ids))
    sources["head"] = _head_source(opts)
    enc = linear_paths(tensors, "encoder.")
    dec = linear_paths(tensors, f"{key}.{head_ids[head]}.")
    if not enc:
        raise CheckpointError(f"{raw.path}: no 2-D weights under 'encoder.'")
    roles = {}
    for k in tensors:
        m = re.match(rf"{key}\.(\d+)\.", k)
        if m and int(m.group(1)) != head_ids[head]:
            roles[k] = f"head {m.group(1)} (not selected; --head {m.group(1)})"
    layout = replace(COHORT, label=COHORT.label.format(key=key, heads=len(head_ids)))
    return ForeignCohort(key, head_ids, head, enc, dec, roles, layout)
