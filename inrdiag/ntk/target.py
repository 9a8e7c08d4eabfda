"""Linking the NTK spectrum to a target: kernel-target alignment and linearised gradient descent.

With the loss ``L = (1 / 2N) sum_n sum_c (f_c(x_n) - y_nc)^2`` plain gradient descent with step
``eta`` moves the residual ``r = f - y`` of a linearised network by ``r_{t+1} = (I - eta Theta / N) r_t``
(exactly, for a scalar output: ``grad L = J^T r / N``). In the eigenbasis of Theta this is

    ||r_t||^2 = sum_i (1 - eta lambda_i / N)^(2t) (u_i . r_0)^2  +  ||(I - U U^T) r_0||^2,

where the last term, the part of ``r_0`` outside the computed eigenvectors, is kept constant (all of
it in exact mode is inside, so it is zero; in lanczos mode it is an upper-bound-style assumption:
those directions have eigenvalues below lambda_k and move slowly). For C > 1 output channels the
traced kernel ``Theta = sum_c J_c J_c^T`` is not the per-channel kernel; the prediction uses
``Theta / C`` per channel, an approximation (exact when the channel blocks are equal). Adam and
other adaptive optimisers follow different dynamics: the prediction is for plain gradient descent.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from ..metrics import psnr_from_mse


@dataclass
class TargetNTK:
    #: [(k, fraction of ||y||^2 in the span of the top-k eigenvectors)] for k = 1, 10, 100, ...
    alignment: list[tuple[int, float]]
    lr: float
    steps: list[int]
    predicted_psnr: list[float]
    #: Fraction of ||r_0||^2 outside the computed eigenvectors (held fixed in the prediction).
    residual_outside: float
    measured_psnr: list[float] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alignment": [{"k": k, "fraction": f} for k, f in self.alignment], "lr": self.lr,
            "loss": "(1/2N) sum_n sum_c (f_c(x_n) - y_nc)^2, plain gradient descent",
            "steps": self.steps, "predicted_psnr": self.predicted_psnr, "measured_psnr": self.measured_psnr,
            "residual_outside_fraction": self.residual_outside, "notes": self.notes,
        }  # fmt: skip


def alignment(U, y) -> list[tuple[int, float]]:
    """``sum_c ||U_k^T y_c||^2 / ||y||^2`` for k = 1, 10, 100, ... up to the columns of U (N x K)."""
    import torch

    y = y.to(U.dtype)
    proj = (U.T @ y) ** 2  # K x C
    cum = torch.cumsum(proj.sum(1), 0)
    total = float((y**2).sum())
    out, k = [], 1
    while k <= U.shape[1]:
        out.append((k, float(cum[k - 1]) / total if total > 0 else 0.0))
        k *= 10
    if out[-1][0] != U.shape[1]:
        out.append((U.shape[1], float(cum[-1]) / total if total > 0 else 0.0))
    return out


def _psnr(sq: float, count: int) -> float:
    return psnr_from_mse(sq / count)


def predicted_psnr(eigenvalues, U, r0, lr: float, steps: list[int]) -> tuple[list[float], float]:
    """Predicted PSNR (dB, signal range 1) after t steps of plain GD, and the outside fraction."""
    import torch

    n, C = r0.shape
    lam = torch.as_tensor(eigenvalues[: U.shape[1]], dtype=torch.float64) / C
    r0 = r0.to(torch.float64)
    U = U.to(torch.float64)
    coef = (U.T @ r0) ** 2  # K x C
    outside = max(float((r0**2).sum() - coef.sum()), 0.0)
    factor = 1 - lr * lam / n
    out = []
    for t in steps:
        sq = float(((factor ** (2 * t))[:, None] * coef).sum()) + outside
        out.append(_psnr(sq, n * C))
    total = float((r0**2).sum())
    return out, outside / total if total > 0 else 0.0


def fit_gd(model, x, y, lr: float, steps: list[int]) -> list[float]:
    """PSNR of plain full-batch gradient descent on ``(1/2N) sum (f - y)^2`` from ``model``, at ``steps``.

    Raw network output (no clipping), so it measures the same residual the prediction does.
    """
    import copy

    import torch

    m = copy.deepcopy(model).train(False)
    y = y.to(x.dtype)
    wanted, out = set(steps), {}
    n, C = y.shape
    last = max(steps)
    for t in range(last + 1):
        with torch.enable_grad():
            r = m(x) - y
            if t in wanted:
                out[t] = _psnr(float((r.detach().double() ** 2).sum()), n * C)
            if t == last:
                break
            loss = 0.5 * (r**2).sum() / n
            grads = torch.autograd.grad(loss, list(m.parameters()))
        with torch.no_grad():
            for p, g in zip(m.parameters(), grads):
                p.sub_(lr * g)
    return [out[t] for t in steps]


def step_schedule(last: int, count: int = 12) -> list[int]:
    """0 and about ``count`` log-spaced steps up to ``last``."""
    if last <= 0:
        return [0]
    pts = {0, last} | {round(last ** (i / count)) for i in range(1, count)}
    return sorted(pts)


def target_ntk(rep, model, y, lr: float, steps: int, fit: bool) -> TargetNTK:
    """Alignment and predicted (and, with ``fit``, measured) residual curve for target values ``y`` (N x C)
    on the report's points; ``rep`` must hold eigenvectors (``ntk_report(..., vectors=True)``)."""
    import torch

    from ..errors import InrdiagError
    from ..models.adapter import as_adapter, cast_module

    if lr <= 0 or not math.isfinite(lr):
        raise InrdiagError(f"--lr must be a positive number, got {lr}")
    if steps < 0:
        raise InrdiagError(f"--fit-steps must be >= 0, got {steps}")
    U = rep.vectors
    x = rep.coords
    module = as_adapter(model).module if not isinstance(model, torch.nn.Module) else model  # a Loaded, an adapter
    # a copy, so the caller's model is left as it was; complex weights stay complex (Module.to would drop Im)
    m = cast_module(copy.deepcopy(module), x.device, x.dtype).eval()
    y = y.to(dtype=x.dtype, device=x.device)
    with torch.no_grad():
        r0 = m(x) - y
    sched = step_schedule(steps if steps > 0 else 1000)
    pred, outside = predicted_psnr(rep.eigenvalues, U, r0, lr, sched)
    notes = ["prediction for plain gradient descent on the linearised network; Adam and other adaptive "
             "optimisers differ"]  # fmt: skip
    if y.shape[1] > 1:
        notes.append("multi-channel target: per-channel kernel approximated by Theta / C")
    lam1 = rep.eigenvalues[0] / y.shape[1]
    if lr * lam1 / x.shape[0] > 2:
        notes.append(f"lr * lambda_1 / N = {lr * lam1 / x.shape[0]:.3g} > 2: linearised GD diverges at this --lr")
    if outside > 1e-12:
        notes.append(f"{outside:.1%} of ||r_0||^2 lies outside the top-{U.shape[1]} eigenvectors and is held fixed")
    measured = fit_gd(m, x, y, lr, sched) if fit and steps > 0 else None
    return TargetNTK(alignment(U, y), lr, sched, pred, outside, measured, notes)
