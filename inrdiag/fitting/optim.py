"""The one training loop of inrdiag's Adam-on-a-loss fits: ``fit``, cohort training (one process and
sharded) and the freeze sweep's fits all run ``adam_loop``.

One step: ``zero_grad(set_to_none=True)``, the caller's ``grad_step(step)`` (forward, loss,
``backward``), ``Adam.step()``. Adam is torch's fused kernel where torch has one for the parameters'
device and dtype (CPU and CUDA since torch 2.4), else its multi-tensor (foreach) implementation.
The loss of every step is kept on the device (``losses``); the host reads it only on report steps
(about ``REPORT_POINTS`` evenly spaced steps, plus the first and the last), where the loss is checked
for divergence and ``progress(step, steps, loss, metric)`` is called. No other host sync.

Parameters are laid out for fast gradients while the loop runs (``training_layout``): the weight of
a linear layer with fewer than ``SKINNY_INPUTS`` inputs (the inlet of a coordinate MLP, fed 1-3
coordinates) is stored transposed, so its gradient is the GEMM ``x^T g`` (d x N @ N x width) instead of
``(g^T x)^T``, whose tiny inner output makes the CPU GEMM several times slower than the whole rest of
that layer (4.4x measured on 65,536 x 256, d = 2; benchmarks/bench_fit.py). The values are untouched;
the layout is restored (contiguous) when the loop ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InrdiagError
from ..progress import Progress

#: Progress calls (and fit curve points) per loop: this many evenly spaced steps, the first and the last.
REPORT_POINTS = 200
#: Linear layers with fewer inputs than this train with their weight stored transposed (``training_layout``).
SKINNY_INPUTS = 8

#: ``grad_step(step)``: compute the loss of step ``step`` (1-based), backpropagate it, return it detached.
GradStep = Callable[[int], torch.Tensor]
#: ``on_report(step, loss) -> metric`` on report steps (NaN: no metric); may raise to stop.
OnReport = Callable[[int, float], float]


def adam(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """torch's Adam (betas 0.9/0.999, eps 1e-8), fused into one kernel where supported, else foreach."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device/dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr, foreach=True)


def report_every(steps: int, points: int = REPORT_POINTS) -> int:
    """The stride of report steps: ``steps // points`` (at least 1)."""
    return max(1, steps // max(1, points))


def is_report_step(step: int, steps: int, every: int) -> bool:
    """Report steps: the first, every ``every``-th, and the last."""
    return step == 1 or step == steps or step % every == 0


@dataclass
class LoopResult:
    """What ``adam_loop`` measured."""

    #: The loss of every step (float32 tensor of ``steps`` values, on the CPU).
    losses: torch.Tensor
    #: The last loss read on the host (NaN when no step ran).
    final_loss: float


def adam_loop(
    params: Iterable[nn.Parameter],
    lr: float,
    steps: int,
    grad_step: GradStep,
    *,
    on_report: OnReport | None = None,
    after_step: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    every: int | None = None,
    error: type[InrdiagError] = InrdiagError,
    what: str = "training",
    device: torch.device | str = "cpu",
) -> LoopResult:
    """``steps`` Adam steps on ``params`` at learning rate ``lr`` (see the module docstring).

    ``on_report(step, loss)`` runs on report steps and returns the metric passed to ``progress``;
    ``after_step(step)`` runs after every step (evaluations on their own schedule). A non-finite loss
    on a report step raises ``error`` naming the step and ``--lr``.
    """
    opt = adam(params, lr)
    every = report_every(steps) if every is None else every
    losses = torch.empty(steps, dtype=torch.float32, device=device)
    final = math.nan
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = grad_step(step)
        opt.step()
        losses[step - 1] = loss
        if is_report_step(step, steps, every):
            final = float(loss)
            if not math.isfinite(final):
                raise error(f"{what} diverged: the loss became {final} at step {step}; lower --lr (now {lr:g})")
            metric = math.nan if on_report is None else on_report(step, final)
            if progress is not None:
                progress(step, steps, final, metric)
        if after_step is not None:
            after_step(step)
    return LoopResult(losses=losses.cpu(), final_loss=final)


@contextmanager
def training_layout(modules: Iterable[nn.Module]) -> Iterator[None]:
    """While the block runs, store the weight of every ``nn.Linear`` of ``modules`` with fewer than
    ``SKINNY_INPUTS`` inputs transposed in memory (same Parameter objects, same values; see the module
    docstring); restore contiguous weights afterwards, also when the block raises."""
    changed: list[nn.Parameter] = []
    seen: set[int] = set()
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Linear) and id(m) not in seen and m.in_features < SKINNY_INPUTS:
                seen.add(id(m))
                w = m.weight
                if isinstance(w, nn.Parameter) and w.requires_grad and w.is_contiguous() and w.dim() == 2:
                    w.data = w.data.t().contiguous().t()
                    changed.append(w)
    try:
        yield
    finally:
        for w in changed:
            w.data = w.data.contiguous()


def unique_parameters(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """``params`` each once (modules shared by several models yield theirs several times), in first-seen order."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
