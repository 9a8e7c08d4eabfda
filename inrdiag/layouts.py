"""Match a checkpoint's tensors to a coordinate MLP: ArchSpec + weights, and a record of how.

Order of evidence: inrdiag metadata, then the key layout of a known codebase (which fixes what
that codebase's constructor defaults to), then flags. What none of these can tell is an
``AmbiguousArchitectureError`` whose message names the flag that resolves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import FORMAT_VERSION, RawCheckpoint
from .errors import AmbiguousArchitectureError, CheckpointError, SpecError
from .spec import ACTIVATIONS, ENCODINGS, USES_W0, ArchSpec

#: Module names that mark an output head, sorted after numbered layers (siren-pytorch: last_layer).
HEAD_NAMES = {"last_layer", "output", "out", "head", "final", "output_linear", "fc_out", "last",
              "output_layer", "out_layer", "final_layer", "to_out"}  # fmt: skip
#: Names of a stored Fourier matrix B (Tancik: B, m x d; nerfstudio RFFEncoding: b_matrix, d x m).
FOURIER_NAMES = {"B", "b_matrix", "B_gauss", "b", "B_matrix", "fourier_B", "bvals", "freqs"}
COHORT_HEADS = ("decoder", "decoders", "heads", "head")


@dataclass
class LoadOptions:
    """What shapes cannot tell, from flags (``None``: not given)."""

    activation: str | None = None
    w0: float | None = None
    w0_hidden: float | None = None
    encoding: str | None = None
    frequencies: int | None = None
    head: int | None = None

    def __post_init__(self) -> None:
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise SpecError(f"unknown --activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if self.encoding is not None and self.encoding not in ENCODINGS:
            raise SpecError(f"unknown --encoding {self.encoding!r}; allowed: {', '.join(ENCODINGS)}")
        for name in ("w0", "w0_hidden"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise SpecError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.frequencies is not None and self.frequencies < 1:
            raise SpecError(f"--frequencies must be >= 1, got {self.frequencies}")
        if self.head is not None and self.head < 0:
            raise SpecError(f"--head must be >= 0, got {self.head}")


@dataclass
class TensorInfo:
    key: str
    shape: list[int]
    dtype: str
    used: bool
    role: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Resolved:
    """An ArchSpec with the state dict (CoordMLP names) it goes with, and how it was inferred."""

    spec: ArchSpec
    state: dict[str, Any]
    layout: str
    layer_keys: list[str]
    sources: dict[str, str]
    tensors: list[TensorInfo]
    provenance: dict[str, Any] = field(default_factory=dict)
    heads: int | None = None
    head: int | None = None
    shared_layers: int | None = None
    head_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def resolve(raw: RawCheckpoint, opts: LoadOptions) -> Resolved:
    """Infer the architecture of ``raw`` (see module docstring)."""
    if raw.metadata is not None:
        return _resolve_inrdiag(raw, opts)
    if not raw.tensors:
        raise CheckpointError(f"{raw.path} holds no tensors")
    return _resolve_foreign(raw, opts)


# ---------------------------------------------------------------- inrdiag's own format
def _resolve_inrdiag(raw: RawCheckpoint, opts: LoadOptions) -> Resolved:
    meta = raw.metadata or {}
    fmt = meta.get("format")
    if fmt != FORMAT_VERSION:
        raise CheckpointError(
            f"{raw.path}: inrdiag format {fmt!r} is not supported (this version reads {FORMAT_VERSION})"
        )
    spec = ArchSpec.from_dict(meta.get("arch"))
    sources = {f: "metadata" for f in ("activation", "w0", "w0_hidden", "encoding", "shapes")}
    _apply_overrides(spec, opts, sources)
    tensors = dict(raw.tensors)
    infos: list[TensorInfo] = []
    cohort = meta.get("cohort")
    heads = head = shared = None
    names = None
    if cohort:
        shared = int(cohort["shared_layers"])
        heads = int(cohort["heads"])
        names = list(cohort.get("names") or [])
        head = _pick_head(opts.head, heads)
        selected = {}
        for k in list(tensors):
            m = re.match(r"heads\.(\d+)\.(.+)$", k)
            if m is None:
                continue
            t = tensors.pop(k)
            if int(m.group(1)) == head:
                selected[m.group(2)] = t
                infos.append(_info(k, t, True, f"head {head}"))
            else:
                infos.append(_info(k, t, False, f"head {m.group(1)} (not selected; --head {m.group(1)})"))
        for k, t in tensors.items():
            infos.append(_info(k, t, True, "shared encoder"))
        tensors.update(selected)
    elif opts.head is not None:
        raise SpecError("--head applies to cohort checkpoints only")
    else:
        infos = [_info(k, t, True, "model") for k, t in tensors.items()]
    expected = _expected_keys(spec)
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{raw.path}: tensors do not match the stored architecture "
            f"(missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    for key, t in tensors.items():
        want = _expected_shape(spec, key)
        if want is not None and list(t.shape) != want:
            raise CheckpointError(f"{raw.path}: {key} has shape {list(t.shape)}, the architecture says {want}")
    return Resolved(
        spec=spec, state=tensors, layout="inrdiag" + (" cohort" if cohort else ""),
        layer_keys=[f"linears.{k}" for k in range(spec.num_linear)], sources=sources, tensors=infos,
        provenance=dict(meta.get("provenance") or {}), heads=heads, head=head, shared_layers=shared,
        head_names=names,
    )  # fmt: skip


def _expected_keys(spec: ArchSpec) -> set[str]:
    from .model import CoordMLP

    return set(CoordMLP(spec).state_dict().keys())


def _expected_shape(spec: ArchSpec, key: str) -> list[int] | None:
    m = re.match(r"linears\.(\d+)\.(weight|bias)$", key)
    if m:
        out, inp = spec.layer_shapes[int(m.group(1))]
        return [out, inp] if m.group(2) == "weight" else [out]
    if key == "encoding.B":
        return [spec.fourier_features, spec.in_features]
    return None


# ---------------------------------------------------------------- other codebases
def _natural(part: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part) if t != "")


def _path_key(path: str) -> tuple:
    """Sort key of a module path: numbers numerically, output-head names after everything else."""
    return tuple((1 if p in HEAD_NAMES else 0, _natural(p)) for p in path.split("."))


def _linear_paths(tensors: dict[str, Any], prefix: str = "") -> list[str]:
    paths = [k[: -len(".weight")] for k, t in tensors.items()
             if k.startswith(prefix) and k.endswith(".weight") and t.ndim == 2]  # fmt: skip
    return sorted(paths, key=_path_key)


def _detect_layout(paths: list[str], wrapper: str) -> tuple[str, dict[str, Any]]:
    """Name the codebase whose key pattern ``paths`` match, and that codebase's defaults."""
    tails = [p.split(".")[-2:] for p in paths]
    last = paths[-1].split(".")[-1]
    if all(len(t) == 2 and t[0].isdigit() and t[1] == "0" for t in tails):
        return "siren-official (net.net.{i}.0)", {"activation": "sine", "w0": 30.0, "w0_hidden": 30.0}
    body = [p.split(".")[-2:] for p in paths[:-1]]
    if (
        body
        and all(len(t) == 2 and t[0].isdigit() and t[1] == "linear" for t in body)
        and (last.isdigit() or last == "linear")
    ):
        if "model_state" in wrapper.split("."):
            return "finer ({'model_state'}: net.{i}.linear)", {"activation": "finer", "w0": 30.0, "w0_hidden": 30.0}
        return "siren-notebook (net.{i}.linear)", {"activation": "sine", "w0": 30.0, "w0_hidden": 30.0}
    if last == "last_layer" and all(len(t) == 2 and t[0] in ("net", "layers") and t[1].isdigit() for t in tails[:-1]):
        return "siren-pytorch (net.{i} + last_layer)", {"activation": "sine", "w0": 30.0, "w0_hidden": 1.0}
    if all(len(t) == 2 and t[0] == "layers" and t[1].isdigit() for t in tails):
        return "nerfstudio MLP (layers.{i})", {"activation": "relu"}
    if all(len(t) == 2 and t[0] == "linears" and t[1].isdigit() for t in tails):
        return "inrdiag state dict (linears.{k}, no metadata)", {}
    if all(p.isdigit() for p in paths):
        return "nn.Sequential ({i}.weight)", {}
    return "generic (ordered 2-D weights)", {}


def _resolve_foreign(raw: RawCheckpoint, opts: LoadOptions) -> Resolved:
    tensors = raw.tensors
    infos: dict[str, TensorInfo] = {k: _info(k, t, False, "not part of the linear chain") for k, t in tensors.items()}
    tops = {k.split(".", 1)[0] for k in tensors}
    heads = head = shared = None
    cohort_key = next((h for h in COHORT_HEADS if h in tops and "encoder" in tops), None)
    notes: list[str] = []
    if cohort_key:
        head_ids = sorted({int(m.group(1)) for k in tensors if (m := re.match(rf"{cohort_key}\.(\d+)\.", k))})
        if not head_ids:
            raise CheckpointError(
                f"{raw.path}: 'encoder' and '{cohort_key}' found, but no numbered heads '{cohort_key}.{{d}}.*'"
            )
        heads = len(head_ids)
        head = _pick_head(opts.head, heads)
        enc = _linear_paths(tensors, "encoder.")
        dec = _linear_paths(tensors, f"{cohort_key}.{head_ids[head]}.")
        shared = len(enc)
        paths = enc + dec
        for k in tensors:
            m = re.match(rf"{cohort_key}\.(\d+)\.", k)
            if m and int(m.group(1)) != head_ids[head]:
                infos[k].role = f"head {m.group(1)} (not selected; --head {m.group(1)})"
        layout = f"cohort (encoder.* + {cohort_key}.{{d}}.*, {heads} heads)"
        defaults = {"activation": "sine", "w0": 30.0, "w0_hidden": 30.0} if _alternating(enc) else {}
    else:
        if opts.head is not None:
            raise SpecError("--head applies to cohort checkpoints (encoder.* + decoder.{d}.*) only")
        paths = _linear_paths(tensors)
        if not paths:
            raise CheckpointError(f"{raw.path}: no 2-D weight matrices ('*.weight') found; not an MLP checkpoint")
        layout, defaults = _detect_layout(paths, raw.wrapper)
    if cohort_key and not paths:
        raise CheckpointError(f"{raw.path}: no 2-D weights under 'encoder.'")
    weights = [tensors[p + ".weight"] for p in paths]
    for i in range(len(weights) - 1):
        if weights[i].shape[0] != weights[i + 1].shape[1]:
            raise CheckpointError(
                f"{raw.path}: shapes do not chain: {paths[i]}.weight {list(weights[i].shape)} "
                f"then {paths[i + 1]}.weight {list(weights[i + 1].shape)} (out {weights[i].shape[0]} != in {weights[i + 1].shape[1]})"
            )
    if len(weights) < 2:
        raise CheckpointError(
            f"{raw.path}: only one 2-D weight ({paths[0]}); a coordinate MLP needs at least two layers"
        )
    state: dict[str, Any] = {}
    has_bias = [p + ".bias" in tensors for p in paths]
    if any(has_bias) and not all(has_bias):
        missing = [p for p, b in zip(paths, has_bias) if not b]
        raise CheckpointError(
            f"{raw.path}: some layers have biases and {missing} do not; mixed biases are not supported"
        )
    for k, p in enumerate(paths):
        state[f"linears.{k}.weight"] = tensors[p + ".weight"]
        infos[p + ".weight"] = _info(p + ".weight", tensors[p + ".weight"], True, f"linear {k} weight")
        if has_bias[k]:
            b = tensors[p + ".bias"]
            if b.ndim != 1 or b.shape[0] != weights[k].shape[0]:
                raise CheckpointError(
                    f"{raw.path}: {p}.bias has shape {list(b.shape)}, expected [{weights[k].shape[0]}]"
                )
            state[f"linears.{k}.bias"] = b
            infos[p + ".bias"] = _info(p + ".bias", b, True, f"linear {k} bias")
    batchnorm = _find_batchnorm(tensors, paths, state, infos, raw.path)

    sources: dict[str, str] = {"shapes": f"layout {layout}"}
    in0 = int(weights[0].shape[1])
    enc_kw, d = _infer_encoding(tensors, paths, in0, opts, state, infos, sources, raw.path)
    activation = opts.activation or defaults.get("activation")
    if activation is None:
        raise AmbiguousArchitectureError(
            f"{raw.path}: layout '{layout}' does not say which activation the hidden layers use; "
            f"pass --activation ({'|'.join(ACTIVATIONS)})"
        )
    sources["activation"] = "flag --activation" if opts.activation else f"layout default ({layout.split(' ')[0]})"
    w0 = defaults.get("w0", 30.0)
    w0_hidden = defaults.get("w0_hidden", w0)
    w0_src = f"layout default ({layout.split(' ')[0]})" if "w0" in defaults else "inrdiag default"
    if activation in USES_W0 and "w0" not in defaults and opts.w0 is None:
        raise AmbiguousArchitectureError(
            f"{raw.path}: activation '{activation}' needs its frequency, which the file does not store; pass --w0 "
            "(official SIREN: 30; add --w0-hidden 1 for siren-pytorch)"
        )
    sources["w0"] = sources["w0_hidden"] = w0_src
    spec = ArchSpec(
        in_features=d, out_features=int(weights[-1].shape[0]), hidden=[int(w.shape[0]) for w in weights[:-1]],
        activation=activation, w0=w0, w0_hidden=w0_hidden, batchnorm=batchnorm, bias=all(has_bias), **enc_kw,
    )  # fmt: skip
    _apply_overrides(spec, LoadOptions(w0=opts.w0, w0_hidden=opts.w0_hidden), sources)
    if activation not in USES_W0:
        sources["w0"] = sources["w0_hidden"] = "unused by this activation"
    if raw.wrapper:
        notes.append(f"state dict taken from wrapper/prefix '{raw.wrapper}'")
    ordered = [infos[k] for k in tensors]
    ordered += [TensorInfo(k, [], why, False, "skipped") for k, why in raw.skipped.items()]
    return Resolved(
        spec=spec, state=state, layout=layout, layer_keys=paths, sources=sources, tensors=ordered,
        heads=heads, head=head, shared_layers=shared, notes=notes,
    )  # fmt: skip


def _alternating(paths: list[str]) -> bool:
    """STRAINER (alpine) encoders alternate Linear and Sine modules: encoder.0, encoder.2, ..."""
    idx = [p.split(".")[-1] for p in paths]
    return bool(idx) and all(i.isdigit() and int(i) == 2 * n for n, i in enumerate(idx))


def _find_batchnorm(tensors, paths, state, infos, path) -> list[int]:
    """Batch-norm modules (1-D weight/bias + running stats) placed after the linear sorting before them."""
    bn_paths = sorted({k[: -len(".running_mean")] for k in tensors if k.endswith(".running_mean")}, key=_path_key)
    layers: list[int] = []
    for q in bn_paths:
        before = [k for k, p in enumerate(paths) if _path_key(p) < _path_key(q)]
        if not before:
            raise CheckpointError(f"{path}: batch norm '{q}' comes before the first linear layer; not supported")
        k = before[-1]
        if k == len(paths) - 1:
            raise CheckpointError(f"{path}: batch norm '{q}' after the output layer is not supported")
        width = tensors[paths[k] + ".weight"].shape[0]
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            key = f"{q}.{name}"
            if key not in tensors:
                if name == "num_batches_tracked":
                    continue
                raise CheckpointError(
                    f"{path}: batch norm '{q}' lacks '{name}' (affine batch norm with running stats expected)"
                )
            t = tensors[key]
            if name != "num_batches_tracked" and list(t.shape) != [width]:
                raise CheckpointError(f"{path}: {key} has shape {list(t.shape)}, expected [{width}] after {paths[k]}")
            state[f"norms.{k}.{name}"] = t
            infos[key] = _info(key, t, True, f"batch norm after linear {k}")
        layers.append(k)
    return layers


def _infer_encoding(tensors, paths, in0, opts, state, infos, sources, path) -> tuple[dict, int]:
    """Return (encoding fields of ArchSpec, coordinate dimension d)."""
    used = {p + ".weight" for p in paths}
    cands = [k for k, t in tensors.items()
             if t.ndim == 2 and k not in used and k.split(".")[-1] in FOURIER_NAMES and 2 * min(t.shape) <= in0]  # fmt: skip
    fits = []
    for k in cands:
        t = tensors[k]
        for m_axis in (0, 1):
            m, dd = t.shape[m_axis], t.shape[1 - m_axis]
            if 2 * m == in0 and 1 <= dd <= 4:
                fits.append((k, m_axis, int(m), int(dd)))
                break
    enc = opts.encoding
    if enc is None:
        if len(fits) > 1:
            raise AmbiguousArchitectureError(
                f"{path}: several Fourier matrices fit ({[f[0] for f in fits]}); pass --encoding"
            )
        enc = "fourier" if fits else "none"
        sources["encoding"] = (
            f"found Fourier matrix {fits[0][0]}" if fits else "shapes (first layer takes raw coordinates)"
        )
    else:
        sources["encoding"] = "flag --encoding"
    if enc == "fourier":
        if not fits:
            raise AmbiguousArchitectureError(
                f"{path}: --encoding fourier needs the matrix B in the file (a 2-D tensor named B or b_matrix "
                f"with 2*rows = {in0} inputs of the first layer); none found"
            )
        key, m_axis, m, dd = fits[0]
        B = tensors[key] if m_axis == 0 else tensors[key].T
        state["encoding.B"] = B.contiguous()
        infos[key] = _info(
            key, tensors[key], True, "Fourier matrix B" + (" (stored d x m, transposed)" if m_axis else "")
        )
        return {"encoding": "fourier", "fourier_features": m}, dd
    if enc == "positional":
        L = opts.frequencies
        if L is None:
            raise AmbiguousArchitectureError(f"{path}: --encoding positional needs --frequencies L")
        for inc in (True, False):
            per = 2 * L + int(inc)
            if in0 % per == 0 and 1 <= in0 // per <= 4:
                sources["encoding"] += f", {in0 // per}-D input, L={L}, include_input={inc}"
                return {"encoding": "positional", "frequencies": L, "include_input": inc}, in0 // per
        raise AmbiguousArchitectureError(
            f"{path}: first layer takes {in0} inputs, which is not d*(2L+1) or d*2L for --frequencies {L}; check --frequencies"
        )
    if in0 > 4:
        raise AmbiguousArchitectureError(
            f"{path}: first layer takes {in0} inputs, too many for raw coordinates; pass --encoding positional "
            "--frequencies L (Fourier features need their matrix B in the file)"
        )
    return {"encoding": "none"}, in0


def _apply_overrides(spec: ArchSpec, opts: LoadOptions, sources: dict[str, str]) -> None:
    if opts.activation is not None:
        spec.activation = opts.activation
        sources["activation"] = "flag --activation"
    if opts.w0 is not None:
        spec.w0 = spec.w0_hidden = float(opts.w0)
        sources["w0"] = sources["w0_hidden"] = "flag --w0"
    if opts.w0_hidden is not None:
        spec.w0_hidden = float(opts.w0_hidden)
        sources["w0_hidden"] = "flag --w0-hidden"
    if opts.encoding is not None and opts.encoding != spec.encoding:
        raise SpecError(f"--encoding {opts.encoding} contradicts the file's stored encoding '{spec.encoding}'")
    spec.validate()


def _pick_head(requested: int | None, heads: int) -> int:
    head = 0 if requested is None else requested
    if not 0 <= head < heads:
        raise SpecError(f"--head {head} out of range: this cohort checkpoint has heads 0..{heads - 1}")
    return head


def _info(key: str, t, used: bool, role: str) -> TensorInfo:
    return TensorInfo(key, list(t.shape), str(t.dtype).replace("torch.", ""), used, role)
