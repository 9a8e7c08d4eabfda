"""Match a checkpoint's tensors to a coordinate MLP: ArchSpec + weights, and a record of how.

Every property of the rebuilt architecture comes from one of: inrdiag metadata, a flag, or a
*layout rule* -- a key pattern that only one codebase (and version) writes, together with what
that codebase's code fixes (e.g. the official SIREN repo's ``Sine`` is ``sin(30 x)``). A key
pattern several codebases share decides nothing those codebases do differently: that property is
an ``AmbiguousArchitectureError`` naming the flag that decides it (and ``--model-code``).
``Resolved.sources`` records, per property, where its value came from.

The rules, and the public source file each was checked against, are listed in docs/loading.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import AmbiguousArchitectureError, CheckpointError, SpecError
from ..models.spec import ACTIVATIONS, ENCODINGS, OUT_ACTIVATIONS, PE_CONVENTIONS, USES_W0, ArchSpec
from .read import RawCheckpoint

#: Module names that mark an output head, sorted after numbered layers (siren-pytorch: last_layer).
HEAD_NAMES = {"last_layer", "output", "out", "head", "final", "output_linear", "fc_out", "last",
              "output_layer", "out_layer", "final_layer", "to_out"}  # fmt: skip
#: Names of a stored Fourier matrix B whose codebase's formula is known: (m, d) used as x B^T
#: (Tancik's notebooks, alpine's FFN ``PosEncoding.B``); nerfstudio ``RFFEncoding.b_matrix`` is (d, m).
FOURIER_NAMES = {"B": "tancik", "B_gauss": "tancik", "b_matrix": "nerfstudio"}
COHORT_HEADS = ("decoder", "decoders", "heads", "head")
MODEL_CODE = "--model-code FILE.py:Class"
#: Floating dtypes loaded as they are (float16/bfloat16 are converted to float32, and said).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

SRC_SIREN = "vsitzmann/siren modules.py"
SRC_NOTEBOOK = "vsitzmann/siren explore_siren.ipynb"
SRC_FINER = "liuzhen0212/FINER models.py"
SRC_FINER_TRAIN = "liuzhen0212/FINER train_image.py"
SRC_WIRE = "vishwa91/wire modules/{siren,gauss,relu}.py"
SRC_SP = "lucidrains/siren-pytorch siren_pytorch/siren_pytorch.py"
SRC_NS_ENC = "nerfstudio-project/nerfstudio nerfstudio/field_components/encodings.py"
SRC_ALPINE_FFN = "kushalvyas/alpine alpine/models/ffn.py"


@dataclass
class LoadOptions:
    """What the file cannot tell, from flags (``None``: not given). Same names as the CLI flags."""

    activation: str | None = None
    w0: float | None = None
    w0_hidden: float | None = None
    encoding: str | None = None
    frequencies: int | None = None
    head: int | None = None
    out_activation: str | None = None
    pe_convention: str | None = None
    pe_min_exp: float | None = None
    pe_max_exp: float | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("activation", ACTIVATIONS), ("encoding", ENCODINGS),
                              ("out_activation", OUT_ACTIVATIONS), ("pe_convention", PE_CONVENTIONS)):  # fmt: skip
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or v not in allowed):
                raise SpecError(f"unknown {_flag(name)} {v!r}; allowed: {', '.join(allowed)}")
        for name in ("w0", "w0_hidden", "pe_min_exp", "pe_max_exp"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                raise SpecError(f"{_flag(name)} must be a finite number, got {v!r}")
            if name.startswith("w0") and not v > 0:
                raise SpecError(f"{_flag(name)} must be positive, got {v}")
        for name, lo in (("frequencies", 1), ("head", 0)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise SpecError(f"{_flag(name)} must be an integer >= {lo}, got {v!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
    _apply_overrides(spec, opts, sources)
    tensors = dict(raw.tensors)
    infos: list[TensorInfo] = []
    cohort = meta.get("cohort")
    heads = head = shared = None
    names = None
    if cohort:
        shared = cohort["shared_layers"]
        heads = cohort["heads"]
        names = list(cohort.get("names") or [])
        head = _pick_head(opts.head, heads)
        sources["head"] = "flag --head" if opts.head is not None else "default (head 0; --head D for another)"
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
    notes = _dtype_policy(tensors, raw.path)
    return Resolved(
        spec=spec, state=tensors, layout="inrdiag" + (" cohort" if cohort else ""),
        layer_keys=[f"linears.{k}" for k in range(spec.num_linear)], sources=sources, tensors=infos,
        provenance=dict(meta.get("provenance") or {}), heads=heads, head=head, shared_layers=shared,
        head_names=names, notes=notes,
    )  # fmt: skip


# ---------------------------------------------------------------- layouts of other codebases
@dataclass
class Layout:
    """What a key pattern decides. A property absent from ``fixed`` is decided by flags only;
    ``why`` says, for the error message, why the pattern cannot decide it."""

    name: str
    #: property -> (value, source) fixed by a rule unique to one codebase.
    fixed: dict[str, tuple[Any, str]] = field(default_factory=dict)
    #: property -> why the pattern does not decide it.
    why: dict[str, str] = field(default_factory=dict)
    #: activation -> (w0, w0_hidden, source) or a reason string when that activation's w0 is unknown.
    w0: Callable[[str], tuple[float, float, str] | str] | None = None
    #: Numbered layers must be contiguous (each index is a module holding a linear layer).
    contiguous: bool = True
    #: Unused tensors this layout explains: key -> role.
    roles: dict[str, str] = field(default_factory=dict)
    #: Coordinate dimension fixed by the codebase (FINER's train_image.py: 2).
    in_features: int | None = None


_SHARED_NET_LINEAR = f"written by the SIREN notebook ({SRC_NOTEBOOK}), FINER's Siren/Finer/Gauss ({SRC_FINER}) and WIRE's siren/gauss/relu/wire INRs ({SRC_WIRE})"  # noqa: E501


def _parts(fp: str) -> list[str]:
    return fp.split(".")


def _numbered(fps: list[str], container: str | None, suffix: tuple[str, ...]) -> bool:
    """Every path ends in ``[container.]{i}{.suffix}``."""
    n = len(suffix) + 1 + (container is not None)
    for fp in fps:
        p = _parts(fp)
        if len(p) < n or tuple(p[len(p) - len(suffix) :]) != suffix:
            return False
        i = p[len(p) - len(suffix) - 1]
        if not i.isdigit() or (container is not None and p[len(p) - len(suffix) - 2] != container):
            return False
    return True


def _finer_train(raw: RawCheckpoint) -> bool:
    """FINER's train_image.py saves {'model_state', 'train_psnr', 'pred_img', 'train_iter', 'total_time'}."""
    outside = {k.split(".", 1)[0] for k in raw.skipped}
    return raw.wrapper.split(".")[0] == "model_state" and {"train_psnr", "pred_img"} <= outside


def _w0_siren_family(act: str) -> tuple[float, float, str] | str:
    if act in ("sine", "finer"):
        return 30.0, 30.0, (f"layout rule: first_omega_0 = hidden_omega_0 = 30 by default in every codebase "
                            f"writing net.{{i}}.linear ({SRC_NOTEBOOK}, {SRC_FINER}, {SRC_WIRE})")  # fmt: skip
    return f"its Gauss scale defaults differ (FINER Gauss: 30, {SRC_FINER}; WIRE gauss: 10, {SRC_WIRE})"


def _w0_finer_train(act: str) -> tuple[float, float, str] | str:
    return 30.0, 30.0, f"layout rule: {SRC_FINER_TRAIN} defaults --first_omega 30 --hidden_omega 30 --scale 30"


def _detect_layout(paths: list[str], raw: RawCheckpoint, tensors: dict[str, Any]) -> Layout:
    """Name the codebase whose key pattern the chain ``paths`` (as in the file) matches."""
    pre = raw.wrapper + "." if raw.wrapper else ""
    fps = [pre + p for p in paths]
    body, last = fps[:-1], fps[-1]
    # Official SIREN: SingleBVPNet / PINNet hold FCBlock(outermost_linear=True) as .net, whose .net is a
    # MetaSequential of MetaSequential(BatchLinear, nl): keys net.net.{i}.0.
    if _numbered(fps, None, ("0",)) and all(_parts(f)[-4:-2] == ["net", "net"] for f in fps):
        return Layout(
            "siren-official (net.net.{i}.0)",
            fixed={"out_activation": ("none", f"layout rule: SingleBVPNet/PINNet build FCBlock(outermost_linear=True), {SRC_SIREN}"),
                   "pe_convention": ("nerf-siren", f"layout rule: mode='nerf' is PosEncodingNeRF, {SRC_SIREN}")},  # noqa: E501
            why={"activation": f"FCBlock writes these keys for all 7 of its nonlinearities (sine|relu|sigmoid|tanh|selu|softplus|elu; {SRC_SIREN})"},  # noqa: E501
            w0=lambda act: (30.0, 30.0, f"layout rule: Sine.forward is sin(30 x) in every layer, {SRC_SIREN}"),
        )  # fmt: skip
    # net.{i}.linear (+ net.{L} or net.{L}.linear): SineLayer-style modules holding .linear.
    if (
        body
        and _numbered(body, None, ("linear",))
        and (_numbered([last], None, ()) or _numbered([last], None, ("linear",)))
    ):
        linear_last = last.endswith(".linear")
        if _finer_train(raw) and not linear_last:
            return Layout(
                "finer train_image.py ({'model_state'}: net.{i}.linear)",
                fixed={"out_activation": ("none", f"layout rule: FINER's Siren/Finer/Gauss end in nn.Linear, {SRC_FINER}")},
                why={"activation": f"{SRC_FINER_TRAIN} saves this for --model_type siren (its default), finer and gauss"},
                w0=_w0_finer_train,
            )  # fmt: skip
        out = (("same as hidden", f"layout rule: a last SineLayer-style module net.{{L}}.linear is outermost_linear=False "
                                  f"(the hidden layers' class, hidden_omega_0), {SRC_NOTEBOOK}, {SRC_WIRE}")
               if linear_last else
               ("none", f"layout rule: a plain last layer net.{{L}} is outermost_linear=True (nn.Linear), "
                        f"{SRC_NOTEBOOK}, {SRC_FINER}, {SRC_WIRE}"))  # fmt: skip
        return Layout(
            "net.{i}.linear (SIREN notebook / FINER / WIRE)", fixed={"out_activation": out},
            why={"activation": _SHARED_NET_LINEAR}, w0=_w0_siren_family,
        )  # fmt: skip
    # siren-pytorch: SirenNet = net.{i} (<= 0.0.9) or layers.{i} (>= 0.1.0) of Siren modules + last_layer;
    # SirenWrapper adds the prefix net. and a 'grid' buffer.
    tails = [_parts(f) for f in fps]
    sp_body = body and all(len(t) >= 2 and t[-2] in ("net", "layers") and t[-1].isdigit() for t in tails[:-1])
    if sp_body and tails[-1][-1] == "last_layer" and len({t[-2] for t in tails[:-1]}) == 1:
        container = tails[0][-2]
        roles = {}
        wrapped = len(tails[-1]) >= 2 and tails[-1][-2] == "net"
        if wrapped and "grid" in tensors:
            roles["grid"] = f"SirenWrapper's coordinate grid buffer (not a layer), {SRC_SP}"
        why = {"out_activation": ("SirenNet's final_activation is not stored in the state dict (a sine before 0.0.6; "
                                  "nn.Identity() by default from 0.0.6; the README's example uses nn.Sigmoid())")}  # fmt: skip
        if container == "layers":
            w0 = (
                30.0,
                1.0,
                f"layout rule: siren-pytorch >= 0.1.0 (layers.{{i}}) SirenNet(w0_initial=30, w0=1), {SRC_SP}",
            )
            return Layout("siren-pytorch >= 0.1.0 (layers.{i} + last_layer)",
                          fixed={"activation": ("sine", f"layout rule: siren-pytorch Siren layers are sin(w0 h), {SRC_SP}")},
                          why=why, w0=lambda act: w0, roles=roles)  # fmt: skip
        why["w0_hidden"] = ("siren-pytorch <= 0.0.9 (net.{i}) defaults the hidden w0 to 30 in 0.0.4 and 0.0.6-0.0.8, "
                            "to 1 in 0.0.1-0.0.3, 0.0.5 and 0.0.9")  # fmt: skip
        return Layout(
            "siren-pytorch <= 0.0.9 (net.{i} + last_layer)",
            fixed={"activation": ("sine", f"layout rule: siren-pytorch Siren layers are sin(w0 h), {SRC_SP}"),
                   "w0": (30.0, f"layout rule: siren-pytorch SirenNet(w0_initial=30) in every version, {SRC_SP}")},
            why=why, roles=roles,
        )  # fmt: skip
    # alpine FFN: model = ModuleList(PosEncoding(B), Linear, ReLU, ..., Linear): model.{odd} + model.0.B.
    if _numbered(fps, "model", ()):
        stem = fps[0].rsplit(".", 1)[0]
        if f"{stem}.0.B" in {pre + k for k in tensors}:
            return Layout(
                "alpine FFN (model.0.B + model.{2k+1})",
                fixed={"activation": ("relu", f"layout rule: FFN's hidden nonlinearity is ReLU, {SRC_ALPINE_FFN}"),
                       "out_activation": ("none", f"layout rule: FFN(outermost_linear=True) by default, {SRC_ALPINE_FFN}")},
                contiguous=False,
            )  # fmt: skip
    if _finer_train(raw) and _numbered(fps, "net", ()) and raw.wrapper.split(".")[-1] == "net":
        return Layout(
            "finer train_image.py PEMLP ({'model_state'}: net.{2k})",
            fixed={"activation": ("relu", f"layout rule: PEMLP's hidden layers are nn.ReLU, {SRC_FINER}"),
                   "out_activation": ("none", f"layout rule: PEMLP ends in nn.Linear, {SRC_FINER}"),
                   "encoding": ("positional", f"layout rule: PEMLP encodes with its PositionalEncoding, {SRC_FINER}"),
                   "pe_convention": ("finer", f"layout rule: PEMLP's PositionalEncoding, {SRC_FINER}")},
            contiguous=False, in_features=2,
        )  # fmt: skip
    generic_why = {"activation": "no codebase is known by these keys; the hidden activation is not stored",
                   "out_activation": "an output activation module has no weights, so the keys cannot show it"}  # fmt: skip
    if _numbered(fps, "linears", ()):
        return Layout("inrdiag state dict (linears.{k}, no metadata)", why=generic_why)
    if _numbered(fps, "layers", ()):
        why = dict(generic_why, activation="layers.{i} is written by nerfstudio's MLP (activation a constructor argument) "
                                           "and many others")  # fmt: skip
        return Layout("layers.{i} (nerfstudio MLP and others)", why=why, contiguous=False)
    if all(p.isdigit() for p in paths):
        return Layout("nn.Sequential ({i}.weight)", why=generic_why, contiguous=False)
    return Layout("generic (ordered 2-D weights)", why=generic_why, contiguous=False)


def _natural(part: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part) if t != "")


def _path_key(path: str) -> tuple:
    """Sort key of a module path: numbers numerically, output-head names after everything else."""
    return tuple((1 if p in HEAD_NAMES else 0, _natural(p)) for p in path.split("."))


def _linear_paths(tensors: dict[str, Any], prefix: str = "") -> list[str]:
    paths = [k[: -len(".weight")] for k, t in tensors.items()
             if k.startswith(prefix) and k.endswith(".weight") and t.ndim == 2]  # fmt: skip
    return sorted(paths, key=_path_key)


def _group(path: str) -> tuple[str, int | None]:
    """(container, index) of a layer path: the part before its first number, and that number."""
    parts = path.split(".")
    i = next((j for j, t in enumerate(parts) if t.isdigit()), None)
    if i is None:
        return ".".join(parts[:-1]), None
    return ".".join(parts[:i]), int(parts[i])


def _structure_hint(paths: list[str], tensors: dict[str, Any]) -> str:
    """The likely reason a set of layers is not one chain (for the error message)."""
    keys = " ".join(tensors)
    if "modulator" in keys:
        return "a modulator (e.g. siren-pytorch SirenWrapper(latent_dim=...)) multiplies the hidden layers"
    if "filters" in keys:
        return "multiplicative filters (BACON / MFN-style: layers multiplied by filter outputs)"
    return ""


def _check_one_chain(paths: list[str], tensors: dict[str, Any], path: str) -> None:
    """The layers must form one numbered sequence (plus an optional named head): several sequences
    are several networks (nerfstudio's mlp_base + mlp_head) or a structure that is not a chain."""
    groups = sorted({_group(p)[0] for p in paths if _group(p)[1] is not None})
    if len(groups) > 1:
        hint = _structure_hint(paths, tensors)
        raise CheckpointError(
            f"{path}: the 2-D weights form {len(groups)} separate layer sequences ({', '.join(g + '.*' for g in groups[:4])})"
            f"{'; likely ' + hint if hint else ' (several networks, or a structure that is not one chain)'}; "
            f"inrdiag rebuilds only a single chain of linear layers: pass {MODEL_CODE}"
        )


def _check_gaps(paths: list[str], tensors: dict[str, Any], used: set[str], contiguous: bool, path: str) -> None:
    """A numbered chain with a missing member is an error, never a shorter network.

    Module lists of layers (``linears.{k}``, ``net.{i}.linear``, ...) must number 0, 1, 2, ...;
    ``nn.Sequential`` interleaves weight-free modules (activations), so there the number of free
    indices between two linear layers must be the same everywhere (and at most 2); indices held by
    used modules (batch norm, an encoding) do not count as free.
    """
    byg: dict[str, list[int]] = {}
    for p in paths:
        g, i = _group(p)
        if i is not None:
            byg.setdefault(g, []).append(i)
    for g, idx in byg.items():
        idx = sorted(idx)
        pre = g + "." if g else ""
        held = set()
        for k in used:
            if k.startswith(pre):
                head = k[len(pre) :].split(".", 1)[0]
                if head.isdigit():
                    held.add(int(head))
        lead = [i for i in range(idx[0]) if i not in held]
        gaps = [len([i for i in range(a + 1, b) if i not in held]) for a, b in zip(idx, idx[1:])]
        bad = bool(lead) or (contiguous and any(gaps)) or len(set(gaps)) > 1 or any(n > 2 for n in gaps)
        if bad:
            missing = sorted(set(range(idx[-1])) - set(idx) - held)
            present = [k for k in tensors if any(k.startswith(f"{pre}{m}.") for m in missing)]
            detail = f" ({present[0]} has shape {list(tensors[present[0]].shape)})" if present else ""
            raise CheckpointError(
                f"{path}: the numbered layers {pre}{{i}} skip {', '.join(f'{pre}{m}' for m in missing[:6])}{detail}; "
                "a missing or damaged middle layer is not a shorter network"
            )


def _check_chain(paths: list[str], weights: list, path: str, tensors: dict[str, Any]) -> None:
    in0 = int(weights[0].shape[1])
    for i in range(len(weights) - 1):
        out_i, in_n = weights[i].shape[0], weights[i + 1].shape[1]
        if out_i == in_n:
            continue
        extra = in_n - out_i
        hint = _structure_hint(paths, tensors)
        if not hint and (extra == in0 or 1 <= extra <= 4):
            what = "the first layer's input (the encoded coordinates)" if extra == in0 else "raw coordinates"
            hint = (f"a skip connection: {paths[i + 1]} takes {extra} more inputs, the width of {what} "
                    "(NeRF / nerfstudio MLP(skip_connections=...) concatenate the input again)")  # fmt: skip
        raise CheckpointError(
            f"{path}: shapes do not chain: {paths[i]}.weight {list(weights[i].shape)} then {paths[i + 1]}.weight "
            f"{list(weights[i + 1].shape)} (out {out_i} != in {in_n})"
            f"{'; likely ' + hint if hint else ''}; inrdiag rebuilds only a plain chain: pass {MODEL_CODE}"
        )


def _dtype_policy(state: dict[str, Any], path: str) -> list[str]:
    """Floating weights only: float16/bfloat16 converted (and said); complex, integer, bool, float8 refused."""
    notes = []
    halves = []
    for k, t in state.items():
        dt = str(t.dtype).replace("torch.", "")
        if k.endswith("num_batches_tracked"):
            continue
        if t.is_complex():
            raise CheckpointError(
                f"{path}: {k} is {dt}: complex weights (e.g. WIRE's complex Gabor layers) have no real "
                f"counterpart in inrdiag's MLP and are never cast to real; pass {MODEL_CODE}"
            )
        if dt not in FLOAT_DTYPES:
            why = ("float8 weights are quantized (their scales live outside the tensor)" if "float8" in dt
                   else "integer/bool tensors are not trained weights")  # fmt: skip
            raise CheckpointError(f"{path}: {k} is {dt}; {why}. inrdiag loads float16/bfloat16/float32/float64 weights")
        if dt in ("float16", "bfloat16"):
            halves.append(dt)
    if halves:
        notes.append(f"{', '.join(sorted(set(halves)))} weights converted to float32 (computations in float32)")
    return notes


def _resolve_foreign(raw: RawCheckpoint, opts: LoadOptions) -> Resolved:
    tensors = raw.tensors
    for k, t in tensors.items():
        if k.endswith(".weight") and t.ndim > 2 and not k.endswith("norm.weight"):
            raise CheckpointError(
                f"{raw.path}: {k} has shape {list(t.shape)} ({t.ndim}-D): not a linear layer "
                f"(a damaged file, or a layer inrdiag does not model: pass {MODEL_CODE})"
            )
    infos: dict[str, TensorInfo] = {}
    tops = {k.split(".", 1)[0] for k in tensors}
    heads = head = shared = None
    cohort_key = next((h for h in COHORT_HEADS if h in tops and "encoder" in tops), None)
    notes: list[str] = []
    roles: dict[str, str] = {}
    sources: dict[str, str] = {}
    if cohort_key:
        head_ids = sorted({int(m.group(1)) for k in tensors if (m := re.match(rf"{cohort_key}\.(\d+)\.", k))})
        if not head_ids:
            raise CheckpointError(
                f"{raw.path}: 'encoder' and '{cohort_key}' found, but no numbered heads '{cohort_key}.{{d}}.*'"
            )
        heads = len(head_ids)
        head = _pick_head(opts.head, heads)
        sources["head"] = "flag --head" if opts.head is not None else "default (head 0; --head D for another)"
        enc = _linear_paths(tensors, "encoder.")
        dec = _linear_paths(tensors, f"{cohort_key}.{head_ids[head]}.")
        if not enc:
            raise CheckpointError(f"{raw.path}: no 2-D weights under 'encoder.'")
        shared = len(enc)
        paths = enc + dec
        for k in tensors:
            m = re.match(rf"{cohort_key}\.(\d+)\.", k)
            if m and int(m.group(1)) != head_ids[head]:
                roles[k] = f"head {m.group(1)} (not selected; --head {m.group(1)})"
        act_why = "encoder.* + decoder.{d}.* is written by alpine's Strainer (sine, omegas=[30]) and by any encoder/decoder model"
        layout = Layout(f"cohort (encoder.* + {cohort_key}.{{d}}.*, {heads} heads)", contiguous=False,
                        why={"activation": act_why, "out_activation": "an output activation module has no weights"})  # fmt: skip
    else:
        if opts.head is not None:
            raise SpecError("--head applies to cohort checkpoints (encoder.* + decoder.{d}.*) only")
        paths = _linear_paths(tensors)
        if not paths:
            raise CheckpointError(f"{raw.path}: no 2-D weight matrices ('*.weight') found; not an MLP checkpoint")
        if len(paths) >= 2:
            _check_one_chain([p for p in paths if p.split(".")[-1] not in HEAD_NAMES], tensors, raw.path)
        layout = _detect_layout(paths, raw, tensors)
        roles.update(layout.roles)
    if len(paths) < 2:
        raise CheckpointError(
            f"{raw.path}: only one 2-D weight ({paths[0]}); a coordinate MLP needs at least two layers"
        )
    weights = [tensors[p + ".weight"] for p in paths]
    in0 = int(weights[0].shape[1])
    _check_chain(paths, weights, raw.path, tensors)
    state: dict[str, Any] = {}
    has_bias = [p + ".bias" in tensors for p in paths]
    if any(has_bias) and not all(has_bias):
        missing = [p for p, b in zip(paths, has_bias) if not b]
        raise CheckpointError(
            f"{raw.path}: some layers have biases and {missing} do not; mixed biases are not supported ({MODEL_CODE})"
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
    sources["shapes"] = f"shapes of the weights ({layout.name})"
    sources["bias"] = "shapes (every layer has a bias)" if all(has_bias) else "shapes (no layer has a bias)"
    sources["batchnorm"] = ("shapes (running statistics after linear layers " + str(batchnorm) + ")"
                            if batchnorm else "shapes (no batch-norm statistics in the file)")  # fmt: skip
    enc_kw, d = _infer_encoding(tensors, paths, in0, opts, layout, state, infos, sources, roles, raw.path)
    if not cohort_key:
        _check_gaps(paths, tensors, set(infos) | set(roles), layout.contiguous, raw.path)
    else:
        _check_gaps(enc, tensors, set(infos) | set(roles), False, raw.path)
        cut = len(f"{cohort_key}.{head_ids[head]}.")
        sub = {k[cut:]: t for k, t in tensors.items() if k.startswith(f"{cohort_key}.{head_ids[head]}.")}
        _check_gaps([p[cut:] for p in dec], sub, {k[cut:] for k in infos if k[cut:] in sub}, False, raw.path)
    if any(
        not p.split(".")[-1].isdigit() and p.split(".")[-1] not in HEAD_NAMES and _group(p)[1] is None for p in paths
    ):
        sources["order"] = "key names sorted (numbers numerically, head names last): the file does not store the order"
    props = _properties(layout, opts, raw.path)
    sources.update(props.pop("_sources"))
    spec = ArchSpec(
        in_features=d, out_features=int(weights[-1].shape[0]), hidden=[int(w.shape[0]) for w in weights[:-1]],
        batchnorm=batchnorm, bias=all(has_bias), **props, **enc_kw,
    )  # fmt: skip
    notes += _dtype_policy(state, raw.path)
    for k, t in tensors.items():
        if k not in infos:
            infos[k] = _info(k, t, False, roles.get(k, "not part of the linear chain"))
    _check_accounted(tensors, infos, roles, paths, raw.path)
    if raw.wrapper:
        notes.append(f"state dict taken from wrapper/prefix '{raw.wrapper}'")
    ordered = [infos[k] for k in tensors]
    ordered += [TensorInfo(k, [], "-", False, f"skipped: {why}") for k, why in raw.skipped.items()]
    return Resolved(
        spec=spec, state=state, layout=layout.name, layer_keys=paths, sources=sources, tensors=ordered,
        heads=heads, head=head, shared_layers=shared, notes=notes,
    )  # fmt: skip


def _check_accounted(tensors, infos, roles, paths, path) -> None:
    """Every unused tensor that could change the function is explained, or the load is refused:
    2-D/3-D tensors (a layer, an embedding, a matrix), and any tensor inside a chain layer's module
    (a learnable w0, a scale)."""
    modules = {p.rsplit(".", 1)[0] + "." for p in paths if "." in p}
    modules |= {p + "." for p in paths}
    bad = []
    for k, info in infos.items():
        if info.used or k in roles:
            continue
        t = tensors[k]
        inside = any(k.startswith(m) for m in modules)
        if t.ndim >= 2 or inside:
            bad.append(f"{k} {list(t.shape)}")
    if bad:
        raise CheckpointError(
            f"{path}: tensors {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''} are not part of the linear chain "
            f"and inrdiag cannot tell what they compute; pass {MODEL_CODE}"
        )


def _properties(layout: Layout, opts: LoadOptions, path: str) -> dict[str, Any]:
    """activation, w0, w0_hidden, out_activation, each from a flag or the layout's rule; what neither
    decides is collected into one AmbiguousArchitectureError naming every flag needed."""
    src: dict[str, str] = {}
    need: list[str] = []
    fixed = layout.fixed

    def pick(name: str, flag_value, choices: str):
        if flag_value is not None:
            src[name] = f"flag {_flag(name)}"
            return flag_value
        if name in fixed:
            src[name] = fixed[name][1]
            return fixed[name][0]
        need.append(f"{layout.why.get(name, 'not stored in the file')} -> pass {_flag(name)} {choices}")
        return None

    act = pick("activation", opts.activation, "|".join(ACTIVATIONS))
    out = pick("out_activation", opts.out_activation, "|".join(OUT_ACTIVATIONS))
    if out == "same as hidden":
        out = act
    w0 = w0_hidden = 30.0
    if act in USES_W0 or out in USES_W0:
        rule = layout.w0(act) if layout.w0 is not None else None
        for name, flag_value in (
            ("w0", opts.w0),
            ("w0_hidden", opts.w0_hidden if opts.w0_hidden is not None else opts.w0),
        ):
            if flag_value is not None:
                val = float(flag_value)
                src[name] = "flag --w0-hidden" if name == "w0_hidden" and opts.w0_hidden is not None else "flag --w0"
            elif name in fixed:
                val, src[name] = fixed[name]
            elif isinstance(rule, tuple):
                val = rule[0] if name == "w0" else rule[1]
                src[name] = rule[2]
            else:
                why = (
                    rule
                    if isinstance(rule, str)
                    else layout.why.get(name, f"the file does not store the frequency of {act}")
                )
                flag = "--w0" if name == "w0" else "--w0-hidden"
                if not any(flag in n for n in need) and not (name == "w0_hidden" and any("--w0 " in n for n in need)):
                    need.append(
                        f"{why} -> pass {flag}" + (" (the Gauss scale)" if act == "gauss" else " (official SIREN: 30)")
                    )
                val = 30.0
            if name == "w0":
                w0 = val
            else:
                w0_hidden = val
    else:
        src["w0"] = src["w0_hidden"] = "unused by this activation"
    if need:
        raise AmbiguousArchitectureError(
            f"{path}: layout '{layout.name}' does not decide everything: "
            + "; ".join(need)
            + f"; or use your own model class with {MODEL_CODE}"
        )
    return {"activation": act, "out_activation": out, "w0": w0, "w0_hidden": w0_hidden, "_sources": src}


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
            raise CheckpointError(f"{path}: batch norm '{q}' after the output layer is not supported ({MODEL_CODE})")
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


def _same_tensor(a, b) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    import torch

    return bool(torch.equal(a, b))


def _fourier_candidates(tensors, paths, in0, roles) -> list[tuple[str, str, int, int, bool]]:
    """Stored Fourier matrices that fit the first layer: (key, convention, m, d, include_input).

    The same tensor registered under two names (alpine's FFN keeps its encoding as ``pos_encode``
    and as ``model.0``) is one matrix: the second name is recorded as a duplicate.
    """
    used = {p + ".weight" for p in paths}
    fits: list[tuple[str, str, int, int, bool]] = []
    for k, t in tensors.items():
        name = k.split(".")[-1]
        if k in used or t.ndim != 2 or name not in FOURIER_NAMES:
            continue
        conv = FOURIER_NAMES[name]
        m, dd = (int(t.shape[1]), int(t.shape[0])) if conv == "nerfstudio" else (int(t.shape[0]), int(t.shape[1]))
        if not 1 <= dd <= 4:
            continue
        if 2 * m == in0:
            inc = False
        elif conv == "nerfstudio" and 2 * m + dd == in0:
            inc = True
        else:
            continue
        twin = next((f[0] for f in fits if _same_tensor(tensors[f[0]], t)), None)
        if twin is not None:
            roles[k] = f"the same Fourier matrix as {twin} (one tensor under two names)"
            continue
        fits.append((k, conv, m, dd, inc))
    return fits


def _infer_encoding(tensors, paths, in0, opts, layout, state, infos, sources, roles, path) -> tuple[dict, int]:
    """Return (encoding fields of ArchSpec, coordinate dimension d)."""
    fits = _fourier_candidates(tensors, paths, in0, roles)
    fixed = layout.fixed
    if opts.encoding is not None:
        enc, sources["encoding"] = opts.encoding, "flag --encoding"
    elif "encoding" in fixed:
        enc, sources["encoding"] = fixed["encoding"][0], fixed["encoding"][1]
    elif len(fits) > 1:
        raise AmbiguousArchitectureError(
            f"{path}: several different Fourier matrices fit the first layer ({[f[0] for f in fits]}); "
            f"inrdiag cannot tell which one the model uses: pass {MODEL_CODE}"
        )
    elif fits:
        enc, sources["encoding"] = "fourier", f"found Fourier matrix {fits[0][0]}"
    else:
        enc, sources["encoding"] = "none", "shapes (the first layer takes raw coordinates)"
    if enc == "fourier":
        if not fits:
            raise AmbiguousArchitectureError(
                f"{path}: --encoding fourier needs the matrix B in the file: a 2-D tensor named B or B_gauss "
                f"(m x d, 2m = {in0} inputs of the first layer) or nerfstudio's b_matrix (d x m, 2m or 2m + d "
                f"= {in0}); none found"
            )
        key, conv, m, dd, inc = fits[0]
        B = tensors[key].T if conv == "nerfstudio" else tensors[key]
        state["encoding.B"] = B.contiguous()
        role = "Fourier matrix B" + (" (nerfstudio RFFEncoding.b_matrix, stored d x m)" if conv == "nerfstudio" else "")
        infos[key] = _info(key, tensors[key], True, role)
        rule = (f"layout rule: the name b_matrix is nerfstudio's RFFEncoding: 2 pi x b_matrix, [sin(s), sin(s + pi/2)]"
                f"{', then x (include_input: the first layer takes 2m + d inputs)' if inc else ''}, {SRC_NS_ENC}"
                if conv == "nerfstudio" else
                f"layout rule: a matrix named {key.split('.')[-1]} (m x d) is Tancik's [sin(2 pi x B^T), cos(2 pi x B^T)]"
                f" ({SRC_ALPINE_FFN} PosEncoding, tancik/fourier-feature-networks)")  # fmt: skip
        sources["ff_convention"] = rule
        return {"encoding": "fourier", "fourier_features": m, "ff_convention": conv, "ff_include_input": inc}, dd
    if enc == "positional":
        return _positional(in0, opts, layout, sources, path)
    if in0 > 4:
        raise AmbiguousArchitectureError(
            f"{path}: first layer takes {in0} inputs, too many for raw coordinates and no Fourier matrix is stored; "
            f"pass --encoding positional --frequencies L --pe-convention {'|'.join(PE_CONVENTIONS)}, or {MODEL_CODE}"
        )
    return {"encoding": "none"}, in0


def _positional(in0, opts, layout, sources, path) -> tuple[dict, int]:
    fixed = layout.fixed
    if opts.pe_convention is not None:
        conv, sources["pe_convention"] = opts.pe_convention, "flag --pe-convention"
    elif "pe_convention" in fixed:
        conv, sources["pe_convention"] = fixed["pe_convention"]
    else:
        raise AmbiguousArchitectureError(
            f"{path}: several positional-encoding conventions fit (they differ in pi, order and where x goes): "
            f"pass --pe-convention nerf-siren (SIREN/WIRE PosEncodingNeRF) | finer (FINER PEMLP) | "
            f"nerfstudio (NeRFEncoding) | inrdiag"
        )
    kw: dict[str, Any] = {"encoding": "positional", "pe_convention": conv}
    if conv == "nerfstudio":
        if opts.pe_min_exp is None or opts.pe_max_exp is None:
            raise AmbiguousArchitectureError(
                f"{path}: nerfstudio's NeRFEncoding has no default frequency range: pass --pe-min-exp and "
                "--pe-max-exp (its min_freq_exp and max_freq_exp; vanilla NeRF: 0 and 8 with --frequencies 10)"
            )
        kw["pe_min_exp"], kw["pe_max_exp"] = float(opts.pe_min_exp), float(opts.pe_max_exp)
        sources["pe_range"] = "flags --pe-min-exp --pe-max-exp"
    forced_x = conv in ("nerf-siren", "finer")
    L = opts.frequencies
    if L is None:
        d = layout.in_features
        if forced_x and d is not None and in0 % d == 0 and (in0 // d - 1) % 2 == 0 and in0 // d > 1:
            L = (in0 // d - 1) // 2
            sources["frequencies"] = f"shapes ({in0} = d (2L + 1) with d = {d} fixed by the layout)"
        else:
            raise AmbiguousArchitectureError(f"{path}: --encoding positional needs --frequencies L")
    else:
        sources["frequencies"] = "flag --frequencies"
    options = [True] if forced_x else [True, False]
    sols = [(inc, in0 // (2 * L + int(inc))) for inc in options if in0 % (2 * L + int(inc)) == 0]
    sols = [(inc, d) for inc, d in sols if 1 <= d <= 4 and (layout.in_features is None or d == layout.in_features)]
    if not sols:
        raise AmbiguousArchitectureError(
            f"{path}: first layer takes {in0} inputs, which is not d*(2L+1){'' if forced_x else ' or d*2L'} "
            f"(d <= 4) for --frequencies {L}; check --frequencies"
        )
    if len(sols) > 1:
        raise AmbiguousArchitectureError(
            f"{path}: {in0} inputs fit both d={sols[0][1]} with x included and d={sols[1][1]} without; "
            f"inrdiag cannot tell: pass {MODEL_CODE}"
        )
    inc, d = sols[0]
    sources["include_input"] = ("layout rule: the convention always includes x" if forced_x
                                else "shapes (the only width that fits)")  # fmt: skip
    kw.update(frequencies=L, include_input=inc)
    return kw, d


def _apply_overrides(spec: ArchSpec, opts: LoadOptions, sources: dict[str, str]) -> None:
    """Flags on an inrdiag file: they override its metadata (and the sources say so)."""
    for name in ("activation", "out_activation"):
        v = getattr(opts, name)
        if v is not None:
            setattr(spec, name, v)
            sources[name] = f"flag {_flag(name)}"
    if opts.w0 is not None:
        spec.w0 = spec.w0_hidden = float(opts.w0)
        sources["w0"] = sources["w0_hidden"] = "flag --w0"
    if opts.w0_hidden is not None:
        spec.w0_hidden = float(opts.w0_hidden)
        sources["w0_hidden"] = "flag --w0-hidden"
    if opts.encoding is not None and opts.encoding != spec.encoding:
        raise SpecError(f"--encoding {opts.encoding} contradicts the file's stored encoding '{spec.encoding}'")
    if opts.pe_convention is not None and (spec.encoding != "positional" or opts.pe_convention != spec.pe_convention):
        raise SpecError(f"--pe-convention {opts.pe_convention} contradicts the file's stored encoding")
    if opts.frequencies is not None and opts.frequencies != spec.frequencies:
        raise SpecError(f"--frequencies {opts.frequencies} contradicts the file's stored {spec.frequencies}")
    spec.validate()


def _pick_head(requested: int | None, heads: int) -> int:
    head = 0 if requested is None else requested
    if not 0 <= head < heads:
        raise SpecError(f"--head {head} out of range: this cohort checkpoint has heads 0..{heads - 1}")
    return head


def _info(key: str, t, used: bool, role: str) -> TensorInfo:
    return TensorInfo(key, list(t.shape), str(t.dtype).replace("torch.", ""), used, role)
