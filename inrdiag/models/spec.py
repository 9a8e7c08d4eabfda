"""ArchSpec: everything needed to rebuild a coordinate MLP from its weights (plain JSON).

A coordinate MLP computes ``f(x) = out_act(W_L z_{L-1} + b_L)`` with
``z_k = act_k(norm_k(W_k z_{k-1} + b_k))`` and ``z_{-1} = gamma(x)``, the (optional) encoding of
the coordinates ``x in [-1, 1]^d``. Every encoding is a *named convention* of one codebase, because
codebases that all call theirs "positional encoding" compute different functions (see
``PE_CONVENTIONS``).

Validation is plain dataclass validation (``__post_init__``), chosen over a schema library: the
schema is one flat record of a dozen fields, the checks need cross-field rules (a convention's
fields, batch-norm indices within the depth) that a schema language expresses no better, and the
error must name the field, the value and what is allowed in inrdiag's own words. It runs on every
construction, so ``ArchSpec(hidden=["a"])`` and a file's metadata are checked the same way, before
anything is allocated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError

#: Activations inrdiag can evaluate. ``sine`` is SIREN's ``sin(w0 h)``; ``finer`` is FINER's
#: ``sin(w0 (|h| + 1) h)``; ``gauss`` is ``exp(-(w0 h)^2)`` (w0 plays the role of the scale);
#: ``sigmoid``/``selu``/``elu``/``softplus`` are torch's defaults (the official SIREN repo's
#: ``FCBlock`` offers them).
ACTIVATIONS = ("relu", "sine", "finer", "gauss", "tanh", "gelu", "softplus", "leaky_relu", "sigmoid", "selu", "elu")
#: Output activations: ``none`` (a linear head) or any activation; sine/finer/gauss use ``w0_hidden``
#: (the SIREN notebook's and WIRE's last ``SineLayer`` gets ``hidden_omega_0``).
OUT_ACTIVATIONS = ("none", *ACTIVATIONS)
#: Activations whose output is exactly zero on a half-line, so a unit can be "dead" on a grid.
RELU_LIKE = ("relu",)
#: Activations that use the frequency/scale ``w0``.
USES_W0 = ("sine", "finer", "gauss")
ENCODINGS = ("none", "fourier", "positional")
#: Positional-encoding conventions, each the forward code of one codebase (L frequencies, k < L):
#: - ``inrdiag``: ``[x, sin(2^k pi x), cos(2^k pi x)]_k``, per k all d sines then all d cosines;
#:   x optional (first).
#: - ``nerf-siren``: SIREN's and WIRE's ``PosEncodingNeRF``: ``[x, (sin(2^k pi x_j), cos(2^k pi x_j))_{k, j}]``,
#:   interleaved per frequency and coordinate; x always included.
#: - ``finer``: FINER's ``PEMLP``: ``[x, sin(2^k x), cos(2^k x)]_k`` (no pi), per k all d sines then
#:   all d cosines; x always included.
#: - ``nerfstudio``: ``NeRFEncoding``: ``s = 2 pi x_j 2^{e_l}`` with ``e = linspace(min_exp, max_exp, L)``,
#:   coordinate-major; ``[sin(s), sin(s + pi/2)]`` (all sines, then all cosines), x optional (last).
PE_CONVENTIONS = ("inrdiag", "nerf-siren", "finer", "nerfstudio")
#: Fourier-feature conventions with a stored B (m x d):
#: - ``tancik``: ``[sin(2 pi x B^T), cos(2 pi x B^T)]`` (Tancik et al., alpine's ``FFN``, inrdiag's own).
#: - ``nerfstudio``: ``RFFEncoding``: ``s = 2 pi x b_matrix``, ``[sin(s), sin(s + pi/2)]``, then x when
#:   ``ff_include_input``.
FF_CONVENTIONS = ("tancik", "nerfstudio")
#: CoordMLP's state-dict names (``models/mlp.py`` registers its modules under these attributes):
#: linear layer k is ``linears.{k}``, the batch norm after hidden layer k ``norms.{k}``, a stored Fourier
#: matrix ``encoding.B``. Every key name is derived from these, never learnt from a built model.
LINEARS = "linears"
NORMS = "norms"
FOURIER_B = "encoding.B"
#: Tensors of one batch-norm module, in state-dict order (the last is a 0-d integer counter).
NORM_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
#: Width above which a declared architecture is not believed (no coordinate MLP is this wide).
MAX_WIDTH = 1 << 20
MAX_LAYERS = 4096


def linear_key(k: int) -> str:
    """Module path of CoordMLP's linear layer ``k`` (``linears.{k}``; its tensors add ``.weight``/``.bias``)."""
    return f"{LINEARS}.{k}"


def norm_key(k: int) -> str:
    """Module path of the batch norm after CoordMLP's hidden layer ``k`` (``norms.{k}``)."""
    return f"{NORMS}.{k}"


def is_encoder_key(key: str, K: int) -> bool:
    """Whether the CoordMLP state-dict ``key`` belongs to an encoder of ``K`` linear layers (the encoding,
    linear layers 0..K-1 and their batch norms); every other CoordMLP key is a head's (cohort files)."""
    parts = key.split(".")
    if parts[0] == FOURIER_B.split(".")[0]:
        return True
    if parts[0] in (LINEARS, NORMS) and len(parts) > 1 and parts[1].isdigit():
        return int(parts[1]) < K
    raise SpecError(f"unexpected CoordMLP parameter {key!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(f"{name} {value!r} is not allowed; allowed: {', '.join(allowed)}")
    return value


def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise SpecError(f"{name} must be {rng}, got {v}")
    return v


def _real(name: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise SpecError(f"{name} must be a {'positive ' if positive else ''}finite number, got {v}")
    return v


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")
    return value


def _int_list(name: str, value: Any, lo: int, hi: int | None) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{name} must be a list of integers, got {value!r} ({type(value).__name__})")
    return [_int(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(value)]


@dataclass
class ArchSpec:
    """Architecture of a coordinate MLP. Round-trips through JSON (``to_dict``/``from_dict``).

    Files written before a field existed load with that field's default, which is what those
    versions computed (e.g. ``pe_convention="inrdiag"``, ``out_activation="none"``).
    """

    #: d, the number of coordinates (2 for images, 3 for volumes).
    in_features: int
    #: Output channels (1 gray / occupancy logit, 3 RGB).
    out_features: int
    #: Widths of the hidden layers, input to output; the network has ``len(hidden) + 1`` linear layers.
    hidden: list[int]
    #: Activation of every hidden layer.
    activation: str = "relu"
    #: Frequency of the first layer's sine (SIREN's omega_0; official code: 30).
    w0: float = 30.0
    #: Frequency of the hidden layers' sines (official SIREN: 30; siren-pytorch >= 0.0.9: 1).
    w0_hidden: float = 30.0
    #: Coordinate encoding before the first layer.
    encoding: str = "none"
    #: Fourier features: rows m of the stored matrix B (m x d).
    fourier_features: int = 0
    #: Positional encoding: number L of frequencies.
    frequencies: int = 0
    #: Positional encoding: whether gamma(x) contains x itself (first or last, per convention).
    include_input: bool = True
    #: Hidden layers (0-based) followed by batch norm, applied before the activation.
    batchnorm: list[int] = field(default_factory=list)
    #: Whether linear layers have biases.
    bias: bool = True
    #: Activation after the output layer (``none``: a linear head).
    out_activation: str = "none"
    #: Positional encoding: whose formula (see ``PE_CONVENTIONS``).
    pe_convention: str = "inrdiag"
    #: nerfstudio positional encoding only: exponents of the lowest and highest frequency 2^e.
    pe_min_exp: float | None = None
    pe_max_exp: float | None = None
    #: Fourier features: whose formula (see ``FF_CONVENTIONS``).
    ff_convention: str = "tancik"
    #: Fourier features (nerfstudio ``RFFEncoding(include_input=True)``): x appended after the features.
    ff_include_input: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field's type and range (SpecError naming field, value and what is allowed)."""
        self.in_features = _int("in_features", self.in_features, 1, 64)
        self.out_features = _int("out_features", self.out_features, 1, MAX_WIDTH)
        self.hidden = _int_list("hidden", self.hidden, 1, MAX_WIDTH)
        if not self.hidden or len(self.hidden) > MAX_LAYERS:
            raise SpecError(f"hidden must list 1..{MAX_LAYERS} widths, got {len(self.hidden)}")
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("out_activation", self.out_activation, OUT_ACTIVATIONS)
        _choice("encoding", self.encoding, ENCODINGS)
        _choice("pe_convention", self.pe_convention, PE_CONVENTIONS)
        _choice("ff_convention", self.ff_convention, FF_CONVENTIONS)
        self.w0 = _real("w0", self.w0, positive=True)
        self.w0_hidden = _real("w0_hidden", self.w0_hidden, positive=True)
        self.fourier_features = _int("fourier_features", self.fourier_features, 0, MAX_WIDTH)
        self.frequencies = _int("frequencies", self.frequencies, 0, 64)
        self.include_input = _bool("include_input", self.include_input)
        self.bias = _bool("bias", self.bias)
        self.ff_include_input = _bool("ff_include_input", self.ff_include_input)
        for name in ("pe_min_exp", "pe_max_exp"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, _real(name, v))
        if self.encoding == "fourier" and self.fourier_features < 1:
            raise SpecError("encoding 'fourier' needs fourier_features >= 1 (rows of B)")
        if self.encoding == "positional":
            if self.frequencies < 1:
                raise SpecError("encoding 'positional' needs frequencies >= 1 (flag --frequencies L)")
            if self.pe_convention in ("nerf-siren", "finer") and not self.include_input:
                raise SpecError(f"pe_convention '{self.pe_convention}' always includes x; include_input must be true")
        nerfstudio_pe = self.encoding == "positional" and self.pe_convention == "nerfstudio"
        if nerfstudio_pe and (self.pe_min_exp is None or self.pe_max_exp is None):
            raise SpecError("pe_convention 'nerfstudio' needs pe_min_exp and pe_max_exp (--pe-min-exp, --pe-max-exp)")
        if not nerfstudio_pe and (self.pe_min_exp is not None or self.pe_max_exp is not None):
            raise SpecError("pe_min_exp/pe_max_exp apply to the nerfstudio positional encoding only")
        if self.ff_include_input and not (self.encoding == "fourier" and self.ff_convention == "nerfstudio"):
            raise SpecError("ff_include_input applies to nerfstudio Fourier features (ff_convention 'nerfstudio') only")
        self.batchnorm = sorted(set(_int_list("batchnorm", self.batchnorm, 0, len(self.hidden) - 1)))

    @property
    def encoded_features(self) -> int:
        """Width of gamma(x), the input of the first linear layer."""
        if self.encoding == "fourier":
            return 2 * self.fourier_features + (self.in_features if self.ff_include_input else 0)
        if self.encoding == "positional":
            return self.in_features * (2 * self.frequencies + int(self.include_input))
        return self.in_features

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of every linear layer, inlet first, output head last."""
        dims = [self.encoded_features, *self.hidden, self.out_features]
        return [(dims[i + 1], dims[i]) for i in range(len(dims) - 1)]

    @property
    def num_linear(self) -> int:
        return len(self.hidden) + 1

    @property
    def num_parameters(self) -> int:
        """Parameters of the model this spec builds (computed from shapes, nothing allocated)."""
        n = sum(o * i + (o if self.bias else 0) for o, i in self.layer_shapes)
        return n + 2 * sum(self.hidden[k] for k in self.batchnorm)

    def layer_keys(self) -> list[str]:
        """Module paths of the linear layers of ``CoordMLP(self)``, inlet first (``linears.{k}``)."""
        return [linear_key(k) for k in range(self.num_linear)]

    def state_shapes(self) -> dict[str, list[int]]:
        """Key -> shape of every tensor of ``CoordMLP(self).state_dict()``, in its order, without building it:
        ``encoding.B`` (m, d) with Fourier features, ``linears.{k}.weight`` (out_k, in_k) and ``.bias``
        (out_k,), ``norms.{k}.*`` (width_k,) and ``norms.{k}.num_batches_tracked`` () per batch norm."""
        shapes: dict[str, list[int]] = {}
        if self.encoding == "fourier":
            shapes[FOURIER_B] = [self.fourier_features, self.in_features]
        for key, (o, i) in zip(self.layer_keys(), self.layer_shapes):
            shapes[f"{key}.weight"] = [o, i]
            if self.bias:
                shapes[f"{key}.bias"] = [o]
        for k in self.batchnorm:
            for name in NORM_TENSORS:
                shapes[f"{norm_key(k)}.{name}"] = [] if name == "num_batches_tracked" else [self.hidden[k]]
        return shapes

    def layer_w0(self, k: int) -> float:
        """The w0 used by hidden layer k's activation (first layer: w0; others: w0_hidden)."""
        return self.w0 if k == 0 else self.w0_hidden

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        if not isinstance(data, dict):
            raise SpecError(f"architecture must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown architecture fields {unknown}; known: {sorted(known)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]  # fmt: skip
        missing = [n for n in required if n not in data]
        if missing:
            raise SpecError(f"architecture lacks required fields {missing}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
