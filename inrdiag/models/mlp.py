"""CoordMLP: the torch module built from an ArchSpec, with access to every layer's activations.

Each encoding class computes one codebase's formula with the same floating-point operations in
the same order (e.g. nerfstudio's cosine is ``sin(s + pi/2)``), so a rebuilt model matches the
original to rounding, not just mathematically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ..errors import SpecError
from ..grid import check_memory
from .spec import ArchSpec


class FourierEncoding(nn.Module):
    """Fourier features with a stored B of shape (m, d).

    ``tancik``: ``[sin(2 pi x B^T), cos(2 pi x B^T)]``; ``nerfstudio`` (``RFFEncoding``):
    ``s = 2 pi x B^T``, ``[sin(s), sin(s + pi/2)]`` and, with ``include_input``, x appended last.
    Maps (N, d) to (N, 2m), or (N, 2m + d) with ``include_input``.
    """

    B: torch.Tensor

    def __init__(self, in_features: int, m: int, convention: str = "tancik", include_input: bool = False) -> None:
        super().__init__()
        self.convention = convention
        self.include_input = include_input
        self.register_buffer("B", torch.zeros(m, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * x @ self.B.T
        if self.convention == "tancik":
            return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)
        out = torch.sin(torch.cat([proj, proj + math.pi / 2.0], dim=-1))
        return torch.cat([out, x], dim=-1) if self.include_input else out


class PositionalEncoding(nn.Module):
    """gamma(x) with L frequencies, in one of ``spec.PE_CONVENTIONS`` (see there for the formulas): maps
    (N, d) to (N, d (2L + 1)), or (N, 2 d L) without x."""

    def __init__(
        self,
        frequencies: int,
        include_input: bool,
        convention: str = "inrdiag",
        min_exp: float | None = None,
        max_exp: float | None = None,
    ) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.include_input = include_input
        self.convention = convention
        self.min_exp, self.max_exp = min_exp, max_exp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.frequencies
        if self.convention == "nerfstudio":
            assert self.min_exp is not None and self.max_exp is not None  # ArchSpec.validate requires them
            freqs = 2 ** torch.linspace(self.min_exp, self.max_exp, L, dtype=x.dtype, device=x.device)
            s = (2 * torch.pi * x)[..., None] * freqs
            s = s.reshape(*s.shape[:-2], -1)
            out = torch.sin(torch.cat([s, s + torch.pi / 2.0], dim=-1))
            return torch.cat([out, x], dim=-1) if self.include_input else out
        parts = [x] if self.include_input else []
        if self.convention == "nerf-siren":
            for k in range(L):
                for j in range(x.shape[-1]):
                    c = x[..., j : j + 1]
                    parts += [torch.sin((2**k) * math.pi * c), torch.cos((2**k) * math.pi * c)]
            return torch.cat(parts, dim=-1)
        for k in range(L):
            arg = (2.0**k) * x if self.convention == "finer" else (2.0**k) * math.pi * x
            parts += [torch.sin(arg), torch.cos(arg)]
        return torch.cat(parts, dim=-1)


def activation(name: str, h: torch.Tensor, w0: float) -> torch.Tensor:
    """Apply the named activation (see ``spec.ACTIVATIONS``) with frequency/scale w0, elementwise (any shape)."""
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
    if name == "sigmoid":
        return torch.sigmoid(h)
    if name == "selu":
        return nn.functional.selu(h)
    if name == "elu":
        return nn.functional.elu(h)
    if name == "none":
        return h
    raise ValueError(name)  # unreachable: ArchSpec validates names


@dataclass
class Trace:
    """Everything a forward pass computed, for diagnostics.

    ``inputs[k]`` is the input of linear layer k (N x in_k; ``inputs[0]`` = gamma(x)),
    ``pre[k]`` its output ``W_k a + b_k`` (N x out_k), ``post[k]`` hidden layer k's activation
    output Z_k (N x width_k; there is none for the output head), ``out`` the network output
    (``out_activation`` of ``pre[-1]``).
    """

    inputs: list[torch.Tensor]
    pre: list[torch.Tensor]
    post: list[torch.Tensor]
    out: torch.Tensor


class CoordMLP(nn.Module):
    """A coordinate MLP. Parameter names: ``linears.{k}.weight/bias``, ``norms.{k}.*``, ``encoding.B``."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        if not isinstance(spec, ArchSpec):
            raise SpecError(
                f"CoordMLP needs an ArchSpec, got {type(spec).__name__} (build one with ArchSpec(...) "
                "or ArchSpec.from_dict(dict))"
            )
        spec.validate()
        check_memory(4.0 * spec.num_parameters, f"a model of {spec.num_parameters:,} parameters", "architecture")
        self.spec = spec
        if spec.encoding == "fourier":
            self.encoding: nn.Module = FourierEncoding(
                spec.in_features, spec.fourier_features, spec.ff_convention, spec.ff_include_input
            )
        elif spec.encoding == "positional":
            self.encoding = PositionalEncoding(
                spec.frequencies, spec.include_input, spec.pe_convention, spec.pe_min_exp, spec.pe_max_exp
            )
        else:
            self.encoding = nn.Identity()
        self.linears = nn.ModuleList(nn.Linear(n_in, n_out, bias=spec.bias) for n_out, n_in in spec.layer_shapes)
        self.norms = nn.ModuleDict({str(k): nn.BatchNorm1d(spec.hidden[k]) for k in spec.batchnorm})

    def linear(self, k: int) -> nn.Linear:
        """Linear layer k (``linears.{k}``; weight out_k x in_k)."""
        return cast(nn.Linear, self.linears[k])

    def hidden_step(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Hidden layer k after its linear map (h: N x width_k): optional batch norm, then the activation."""
        if str(k) in self.norms:
            h = self.norms[str(k)](h)
        return activation(self.spec.activation, h, self.spec.layer_w0(k))

    def output_step(self, h: torch.Tensor) -> torch.Tensor:
        """The output activation applied to the output layer's linear map (N x C; identity for ``none``)."""
        return activation(self.spec.out_activation, h, self.spec.w0_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): coordinates (N, d) in [-1, 1]^d -> outputs (N, C)."""
        return self.head(self.encoding(x), 0)

    def features(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The activation of hidden layer ``k`` (N x width_k): encoding, then linears 0..k with their
        activations; ``k = -1`` gives the encoding itself (linear 0's input)."""
        a = self.encoding(x)
        for i in range(k + 1):
            a = self.hidden_step(i, self.linears[i](a))
        return a

    def head(self, a: torch.Tensor, j: int) -> torch.Tensor:
        """Linears ``j..L`` applied to ``a`` (linear j's input), with the hidden and output activations:
        ``head(features(x, k), k + 1) == forward(x)``."""
        last = len(self.linears) - 1
        for i in range(j, last + 1):
            a = self.linears[i](a)
            if i < last:
                a = self.hidden_step(i, a)
        return self.output_step(a)

    def trace(self, x: torch.Tensor) -> Trace:
        """Forward pass on x (N, d) that keeps every layer's input, pre-activation and activation (``Trace``)."""
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
                a = self.output_step(h)
        return Trace(inputs=inputs, pre=pre, post=post, out=a)

    @property
    def num_parameters(self) -> int:
        """Number of parameter entries (buffers such as ``encoding.B`` and running statistics excluded)."""
        return sum(p.numel() for p in self.parameters())
