"""Partial passes of sequential chains: run only the layers a pass needs instead of a hooked full forward.

A ``CoordMLP`` (the same ops as its forward, through ``CoordMLP.features``/``head``) and an
``nn.Sequential`` whose linear layers are direct children called once per point in child order
(slices of its children). ``ModuleAdapter`` uses one when its module is such a chain; the results are
bit-identical to the hooked passes on the same module (tests/test_adapter.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from .mlp import CoordMLP


class ChainLayer(Protocol):
    """What a chain needs to know of each linear layer the probe found."""

    module: nn.Linear
    calls: int
    per_point: bool


class Chain(Protocol):
    """The partial passes of a chain; shapes as in ``ModuleAdapter``'s methods of the same names."""

    def features(self, x: torch.Tensor, k: int) -> torch.Tensor: ...
    def all_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]: ...
    def splice(self, k: int, z: torch.Tensor) -> torch.Tensor: ...
    def splice_pre(self, k: int, P: torch.Tensor) -> torch.Tensor: ...


class CoordChain:
    """Partial passes of a CoordMLP: only the layers needed, with the very ops of its forward."""

    def __init__(self, model: CoordMLP) -> None:
        self.m = model
        self.last = len(self.m.linears) - 1

    def head_forward(self, j: int, a: torch.Tensor) -> torch.Tensor:
        """Linear layers j..L of the MLP applied to ``a`` (N x in_j, linear j's input): the output (N x C)."""
        return self.m.head(a, j)

    def features(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Z_k (N x width_k) on the points x (N x d)."""
        return self.m.features(x, k)

    def all_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every hidden layer's Z_k (N x width_k) from one pass on x (N x d)."""
        a = self.m.encoding(x)
        out = {}
        for i in range(self.last):
            a = self.m.hidden_step(i, self.m.linears[i](a))
            out[i] = a
        return out

    def splice(self, k: int, z: torch.Tensor) -> torch.Tensor:
        """The output (N x C) with Z_k replaced by z (N x width_k)."""
        return self.head_forward(k + 1, z)

    def splice_pre(self, k: int, P: torch.Tensor) -> torch.Tensor:
        """The output (N x C) with linear k's output replaced by P (N x out_k)."""
        if k == self.last:
            return self.m.output_step(P)
        return self.head_forward(k + 1, self.m.hidden_step(k, P))


class SequentialChain:
    """Partial passes of an ``nn.Sequential`` whose linear layers are direct children, each called once
    per point in child order: slices of the children list."""

    def __init__(self, seq: nn.Sequential, pos: list[int]) -> None:
        self.children = list(seq)
        self.pos = pos  # child index of each linear layer

    @classmethod
    def of(cls, m: nn.Module, layers: Sequence[ChainLayer]) -> SequentialChain | None:
        """The chain of ``m`` when it is such an ``nn.Sequential`` of the probe's ``layers``, else None."""
        if not isinstance(m, nn.Sequential) or type(m).forward is not nn.Sequential.forward:
            return None
        kids = list(m)
        pos = []
        for layer in layers:
            hit = [i for i, c in enumerate(kids) if c is layer.module]
            if len(hit) != 1 or layer.calls != 1 or not layer.per_point:
                return None
            pos.append(hit[0])
        nested = [
            c for c in kids if not isinstance(c, nn.Linear) and any(isinstance(s, nn.Linear) for s in c.modules())
        ]
        if pos != sorted(pos) or nested:
            return None
        return cls(m, pos)

    def _run(self, a: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        for c in self.children[start:stop]:
            a = c(a)
        return a

    def features(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Z_k (N x width_k): the children up to the linear after layer k, on x (N x d)."""
        return self._run(x, 0, self.pos[k + 1])

    def all_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every Z_k (N x width_k) from one pass on x (N x d)."""
        out: dict[int, torch.Tensor] = {}
        a, at = x, 0
        for k in range(len(self.pos) - 1):
            a = self._run(a, at, self.pos[k + 1])
            at = self.pos[k + 1]
            out[k] = a
        return out

    def splice(self, k: int, z: torch.Tensor) -> torch.Tensor:
        """The output (N x C) with Z_k replaced by z (N x width_k)."""
        return self._run(z, self.pos[k + 1])

    def splice_pre(self, k: int, P: torch.Tensor) -> torch.Tensor:
        """The output (N x C) with linear k's output replaced by P (N x out_k)."""
        return self._run(P.clone(), self.pos[k] + 1)  # children may act in place (ReLU(inplace=True))
