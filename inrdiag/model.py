"""CoordMLP: the torch module built from an ArchSpec, with access to every layer's activations."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .spec import ArchSpec


class FourierEncoding(nn.Module):
    """gamma(x) = [sin(2 pi B x), cos(2 pi B x)] with a stored B of shape (m, d)."""

    def __init__(self, in_features: int, m: int) -> None:
        super().__init__()
        self.register_buffer("B", torch.zeros(m, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * x @ self.B.T
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class PositionalEncoding(nn.Module):
    """NeRF-style gamma(x) = [x, sin(2^0 pi x), cos(2^0 pi x), ..., sin(2^(L-1) pi x), cos(...)].

    For each frequency the sines of all d coordinates come first, then their cosines.
    """

    def __init__(self, frequencies: int, include_input: bool) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.include_input = include_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x] if self.include_input else []
        for k in range(self.frequencies):
            arg = (2.0**k) * math.pi * x
            parts += [torch.sin(arg), torch.cos(arg)]
        return torch.cat(parts, dim=-1)


def activation(name: str, h: torch.Tensor, w0: float) -> torch.Tensor:
    """Apply the named activation (see ``spec.ACTIVATIONS``) with frequency/scale w0."""
    if name == "relu":
        return torch.relu(h)
    if name == "sine":
        return torch.sin(w0 * h)
    if name == "finer":
        return torch.sin(w0 * (torch.abs(h) + 1) * h)
    if name == "gauss":
        return torch.exp(-((w0 * h) ** 2))
    if name == "tanh":
        return torch.tanh(h)
    if name == "gelu":
        return nn.functional.gelu(h)
    if name == "softplus":
        return nn.functional.softplus(h)
    if name == "leaky_relu":
        return nn.functional.leaky_relu(h, 0.01)
    raise ValueError(name)  # unreachable: ArchSpec validates names


@dataclass
class Trace:
    """Everything a forward pass computed, for diagnostics.

    ``inputs[k]`` is the input of linear layer k (N x in_k; ``inputs[0]`` = gamma(x)),
    ``pre[k]`` its output ``W_k a + b_k`` (N x out_k), ``post[k]`` hidden layer k's activation
    output Z_k (N x width_k; there is none for the output head), ``out`` the network output.
    """

    inputs: list[torch.Tensor]
    pre: list[torch.Tensor]
    post: list[torch.Tensor]
    out: torch.Tensor


class CoordMLP(nn.Module):
    """A coordinate MLP. Parameter names: ``linears.{k}.weight/bias``, ``norms.{k}.*``, ``encoding.B``."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        spec.validate()
        self.spec = spec
        if spec.encoding == "fourier":
            self.encoding: nn.Module = FourierEncoding(spec.in_features, spec.fourier_features)
        elif spec.encoding == "positional":
            self.encoding = PositionalEncoding(spec.frequencies, spec.include_input)
        else:
            self.encoding = nn.Identity()
        self.linears = nn.ModuleList(nn.Linear(n_in, n_out, bias=spec.bias) for n_out, n_in in spec.layer_shapes)
        self.norms = nn.ModuleDict({str(k): nn.BatchNorm1d(spec.hidden[k]) for k in spec.batchnorm})

    def hidden_step(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Hidden layer k after its linear map: optional batch norm, then the activation."""
        if str(k) in self.norms:
            h = self.norms[str(k)](h)
        return activation(self.spec.activation, h, self.spec.layer_w0(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.encoding(x)
        last = len(self.linears) - 1
        for k, lin in enumerate(self.linears):
            a = lin(a)
            if k < last:
                a = self.hidden_step(k, a)
        return a

    def trace(self, x: torch.Tensor) -> Trace:
        """Forward pass that keeps every layer's input, pre-activation and activation."""
        a = self.encoding(x)
        inputs, pre, post = [], [], []
        last = len(self.linears) - 1
        for k, lin in enumerate(self.linears):
            inputs.append(a)
            h = lin(a)
            pre.append(h)
            if k < last:
                a = self.hidden_step(k, h)
                post.append(a)
            else:
                a = h
        return Trace(inputs=inputs, pre=pre, post=post, out=a)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
