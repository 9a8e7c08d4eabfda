"""``resolve``: a file's tensors -> ``Resolved`` (ArchSpec, state dict under CoordMLP names, sources).

inrdiag's own files carry their architecture (``own.resolve_own``). Any other file: the 2-D weights
form the linear chain (or a cohort's encoder + selected head, ``cohort.py``); the registered layout
whose keys the chain has (``registry.detect``) decides what it can; the encoding comes from stored
matrices and flags (``encodings.py``); the activations and w0 from flags or the layout
(``properties.py``); every structural doubt is a refusal (``structure.py``).
"""

from __future__ import annotations

import torch

from ...errors import CheckpointError
from ...models.spec import ArchSpec, linear_key
from ..read import RawCheckpoint
from .cohort import foreign_cohort
from .encodings import infer_encoding
from .entry import Chain
from .keys import HEAD_NAMES, group, linear_paths
from .options import MODEL_CODE, LoadOptions
from .own import resolve_own
from .properties import properties
from .records import Resolved, TensorInfo, info
from .registry import detect
from .structure import check_accounted, check_chain, check_gaps, check_one_chain, dtype_policy, find_batchnorm


def resolve(raw: RawCheckpoint, opts: LoadOptions) -> Resolved:
    """Infer the architecture of ``raw`` (see the package docstring)."""
    if raw.metadata is not None:
        return resolve_own(raw, opts)
    if not raw.tensors:
        raise CheckpointError(f"{raw.path} holds no tensors")
    return _resolve_foreign(raw, opts)


def _chain_state(
    paths: list[str],
    weights: list[torch.Tensor],
    tensors: dict[str, torch.Tensor],
    infos: dict[str, TensorInfo],
    path: str,
) -> tuple[dict[str, torch.Tensor], bool]:
    """The key renames every layout shares: the k-th path's weight (out_k, in_k) and bias (out_k,) become
    ``linears.{k}.weight``/``.bias``. Returns the state and whether the layers have biases."""
    has_bias = [p + ".bias" in tensors for p in paths]
    if any(has_bias) and not all(has_bias):
        missing = [p for p, b in zip(paths, has_bias) if not b]
        raise CheckpointError(
            f"{path}: some layers have biases and {missing} do not; mixed biases are not supported ({MODEL_CODE})"
        )
    state: dict[str, torch.Tensor] = {}
    for k, p in enumerate(paths):
        state[f"{linear_key(k)}.weight"] = tensors[p + ".weight"]
        infos[p + ".weight"] = info(p + ".weight", tensors[p + ".weight"], True, f"linear {k} weight")
        if has_bias[k]:
            b = tensors[p + ".bias"]
            if b.ndim != 1 or b.shape[0] != weights[k].shape[0]:
                raise CheckpointError(f"{path}: {p}.bias has shape {list(b.shape)}, expected [{weights[k].shape[0]}]")
            state[f"{linear_key(k)}.bias"] = b
            infos[p + ".bias"] = info(p + ".bias", b, True, f"linear {k} bias")
    return state, all(has_bias)


def _resolve_foreign(raw: RawCheckpoint, opts: LoadOptions) -> Resolved:
    tensors = raw.tensors
    for k, t in tensors.items():
        if k.endswith(".weight") and t.ndim > 2 and not k.endswith("norm.weight"):
            raise CheckpointError(
                f"{raw.path}: {k} has shape {list(t.shape)} ({t.ndim}-D): not a linear layer "
                f"(a damaged file, or a layer inrdiag does not model: pass {MODEL_CODE})"
            )
    infos: dict[str, TensorInfo] = {}
    notes: list[str] = []
    roles: dict[str, str] = {}
    sources: dict[str, str] = {}
    cohort = foreign_cohort(raw, opts, sources)
    if cohort is not None:
        paths = cohort.paths
        roles.update(cohort.roles)
        layout = cohort.layout
    else:
        paths = linear_paths(tensors)
        if not paths:
            raise CheckpointError(f"{raw.path}: no 2-D weight matrices ('*.weight') found; not an MLP checkpoint")
        if len(paths) >= 2:
            check_one_chain([p for p in paths if p.split(".")[-1] not in HEAD_NAMES], tensors, raw.path)
        chain = Chain(paths, raw)
        layout = detect(chain)
        roles.update(layout.roles(chain))
    if len(paths) < 2:
        raise CheckpointError(
            f"{raw.path}: only one 2-D weight ({paths[0]}); a coordinate MLP needs at least two layers"
        )
    weights = [tensors[p + ".weight"] for p in paths]
    in0 = int(weights[0].shape[1])
    check_chain(paths, weights, raw.path, tensors)
    state, bias = _chain_state(paths, weights, tensors, infos, raw.path)
    batchnorm = find_batchnorm(tensors, paths, state, infos, raw.path)
    sources["shapes"] = f"shapes of the weights ({layout.label})"
    sources["bias"] = "shapes (every layer has a bias)" if bias else "shapes (no layer has a bias)"
    sources["batchnorm"] = ("shapes (running statistics after linear layers " + str(batchnorm) + ")"
                            if batchnorm else "shapes (no batch-norm statistics in the file)")  # fmt: skip
    enc_kw, d = infer_encoding(tensors, paths, in0, opts, layout, state, infos, sources, roles, raw.path)
    if cohort is None:
        check_gaps(paths, tensors, set(infos) | set(roles), layout.contiguous, raw.path)
    else:
        cohort.check_gaps(tensors, set(infos), set(roles), raw.path)
    if any(
        not p.split(".")[-1].isdigit() and p.split(".")[-1] not in HEAD_NAMES and group(p)[1] is None for p in paths
    ):
        sources["order"] = "key names sorted (numbers numerically, head names last): the file does not store the order"
    props, prop_sources = properties(layout, opts, raw.path)
    sources.update(prop_sources)
    spec = ArchSpec(
        in_features=d, out_features=int(weights[-1].shape[0]), hidden=[int(w.shape[0]) for w in weights[:-1]],
        batchnorm=batchnorm, bias=bias, **props, **enc_kw,
    )  # fmt: skip
    notes += dtype_policy(state, raw.path)
    for k, t in tensors.items():
        if k not in infos:
            infos[k] = info(k, t, False, roles.get(k, "not part of the linear chain"))
    check_accounted(tensors, infos, roles, paths, raw.path)
    if raw.wrapper:
        notes.append(f"state dict taken from wrapper/prefix '{raw.wrapper}'")
    ordered = [infos[k] for k in tensors]
    ordered += [TensorInfo(k, [], "-", False, f"skipped: {why}") for k, why in raw.skipped.items()]
    return Resolved(
        spec=spec, state=state, layout=layout.label, layer_keys=paths, sources=sources, tensors=ordered,
        notes=notes, **(cohort.heads().fields() if cohort is not None else {}),
    )  # fmt: skip
