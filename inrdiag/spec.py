"""ArchSpec: everything needed to rebuild a coordinate MLP from its weights (plain JSON).

A coordinate MLP computes ``f(x) = W_L z_{L-1} + b_L`` with ``z_k = act_k(norm_k(W_k z_{k-1} + b_k))``
and ``z_{-1} = gamma(x)``, the (optional) encoding of the coordinates ``x in [-1, 1]^d``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError

#: Activations inrdiag can evaluate. ``sine`` is SIREN's ``sin(w0 h)``; ``finer`` is FINER's
#: ``sin(w0 (|h| + 1) h)``; ``gauss`` is ``exp(-(w0 h)^2)`` (w0 plays the role of the scale).
ACTIVATIONS = ("relu", "sine", "finer", "gauss", "tanh", "gelu", "softplus", "leaky_relu")
#: Activations whose output is exactly zero on a half-line, so a unit can be "dead" on a grid.
RELU_LIKE = ("relu",)
#: Activations that use the frequency/scale ``w0``.
USES_W0 = ("sine", "finer", "gauss")
ENCODINGS = ("none", "fourier", "positional")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
    return value


@dataclass
class ArchSpec:
    """Architecture of a coordinate MLP. Round-trips through JSON (``to_dict``/``from_dict``)."""

    #: d, the number of coordinates (2 for images, 3 for volumes).
    in_features: int
    #: Output channels (1 gray / occupancy logit, 3 RGB).
    out_features: int
    #: Widths of the hidden layers, input to output; the network has ``len(hidden) + 1`` linear layers.
    hidden: list[int]
    #: Activation of every hidden layer (the output head is linear).
    activation: str = "relu"
    #: Frequency of the first layer's sine (SIREN's omega_0; official code: 30).
    w0: float = 30.0
    #: Frequency of the hidden layers' sines (official SIREN: 30; siren-pytorch: 1).
    w0_hidden: float = 30.0
    #: Coordinate encoding before the first layer.
    encoding: str = "none"
    #: Fourier features: rows m of the stored matrix B (m x d); gamma = [sin(2 pi B x), cos(2 pi B x)].
    fourier_features: int = 0
    #: Positional encoding: number L of log-spaced frequencies 2^0 pi ... 2^(L-1) pi.
    frequencies: int = 0
    #: Positional encoding: whether gamma(x) starts with x itself.
    include_input: bool = True
    #: Hidden layers (0-based) followed by batch norm, applied before the activation.
    batchnorm: list[int] = field(default_factory=list)
    #: Whether linear layers have biases.
    bias: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.in_features < 1:
            raise SpecError(f"in_features must be >= 1, got {self.in_features}")
        if self.out_features < 1:
            raise SpecError(f"out_features must be >= 1, got {self.out_features}")
        if not self.hidden or any(int(w) < 1 for w in self.hidden):
            raise SpecError(f"hidden widths must be a non-empty list of positive ints, got {self.hidden}")
        self.hidden = [int(w) for w in self.hidden]
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("encoding", self.encoding, ENCODINGS)
        for name in ("w0", "w0_hidden"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v <= 0:
                raise SpecError(f"{name} must be a positive finite number, got {v}")
            setattr(self, name, v)
        if self.encoding == "fourier" and self.fourier_features < 1:
            raise SpecError("encoding 'fourier' needs fourier_features >= 1 (rows of B)")
        if self.encoding == "positional" and self.frequencies < 1:
            raise SpecError("encoding 'positional' needs frequencies >= 1 (flag --frequencies L)")
        bad = [k for k in self.batchnorm if not 0 <= k < len(self.hidden)]
        if bad:
            raise SpecError(f"batchnorm layers {bad} out of range 0..{len(self.hidden) - 1}")
        self.batchnorm = sorted(set(int(k) for k in self.batchnorm))

    @property
    def encoded_features(self) -> int:
        """Width of gamma(x), the input of the first linear layer."""
        if self.encoding == "fourier":
            return 2 * self.fourier_features
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

    def layer_w0(self, k: int) -> float:
        """The w0 used by hidden layer k's activation (first layer: w0; others: w0_hidden)."""
        return self.w0 if k == 0 else self.w0_hidden

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        if not isinstance(data, dict):
            raise SpecError(f"architecture must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown architecture fields {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SpecError(f"incomplete architecture: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
