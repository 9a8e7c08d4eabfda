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

import torch
from torch import Tensor

from ..errors import InrdiagError
from ..metrics import psnr_from_mse
from ..models.adapter import as_adapter, cast_module
from .kernel import NTKReport


@dataclass(frozen=True)
class Alignment:
    """The fraction of ``||y||^2`` in the span of the top ``k`` eigenvectors of Theta."""

    k: int
    fraction: float


@dataclass
class TargetNTK:
    """How a target sits in the NTK's eigenbasis: alignment of the target with the top eigenvectors,
    and the PSNR plain gradient descent is predicted to reach (optionally measured) at each step."""

    #: Alignment for k = 1, 10, 100, ... and the number of eigenvectors computed.
    alignment: list[Alignment]
    lr: float
    steps: list[int]
    predicted_psnr: list[float]
    #: Fraction of ||r_0||^2 outside the computed eigenvectors (held fixed in the prediction).
    residual_outside: float
    measured_psnr: list[float] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alignment": [{"k": a.k, "fraction": a.fraction} for a in self.alignment], "lr": self.lr,
            "loss": "(1/2N) sum_n sum_c (f_c(x_n) - y_nc)^2, plain gradient descent",
            "steps": self.steps, "predicted_psnr": self.predicted_psnr, "measured_psnr": self.measured_psnr,
            "residual_outside_fraction": self.residual_outside, "notes": self.notes,
        }  # fmt: skip


def alignment(U: Tensor, y: Tensor) -> list[Alignment]:
    """``sum_c ||U_k^T y_c||^2 / ||y||^2`` for k = 1, 10, 100, ... up to the columns of U (N x K)."""
    y = y.to(U.dtype)
    proj = (U.T @ y) ** 2  # K x C
    cum = torch.cumsum(proj.sum(1), 0)
    total = float((y**2).sum())
    out: list[Alignment] = []
    k = 1
    while k <= U.shape[1]:
        out.append(Alignment(k=k, fraction=float(cum[k - 1]) / total if total > 0 else 0.0))
        k *= 10
    if out[-1].k != U.shape[1]:
        out.append(Alignment(k=int(U.shape[1]), fraction=float(cum[-1]) / total if total > 0 else 0.0))
    return out


def _psnr(sq: float, count: int) -> float:
    return psnr_from_mse(sq / count)


@dataclass
class Prediction:
    """``predicted_psnr``'s result."""

    #: PSNR (dB, signal range 1) after each step count.
    psnr: list[float]
    #: Fraction of ``||r_0||^2`` outside the eigenvectors (held fixed).
    outside: float


def predicted_psnr(eigenvalues: list[float], U: Tensor, r0: Tensor, lr: float, steps: list[int]) -> Prediction:
    """Predicted PSNR (dB, signal range 1) after t steps of plain GD, and the outside fraction."""
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
    return Prediction(psnr=out, outside=outside / total if total > 0 else 0.0)


def fit_gd(model: torch.nn.Module, x: Tensor, y: Tensor, lr: float, steps: list[int]) -> list[float]:
    """PSNR of plain full-batch gradient descent on ``(1/2N) sum (f - y)^2`` from ``model``, at ``steps``.

    Raw network output (no clipping), so it measures the same residual the prediction does.
    """
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


#: Steps the prediction covers when no fit is asked for (``steps=0``).
PREDICTION_STEPS = 1000


def default_lr(rep: NTKReport, channels: int) -> float:
    """``N C / lambda_1``: the plain-GD step with ``eta lambda_1 / (N C) = 1`` (stable), or an InrdiagError
    when the NTK is zero."""
    lam1 = rep.eigenvalues[0] if rep.eigenvalues else 0.0
    if not lam1 > 0:
        raise InrdiagError(f"the NTK is zero on the grid (lambda_1 = {lam1:g}: no output moves with any parameter, "
                           "e.g. all weights zero), so there is no default step; give --lr")  # fmt: skip
    return rep.points * channels / lam1


def target_ntk(rep: NTKReport, model: Any, y: Tensor, lr: float | None = None, steps: int = 0,
               fit: bool = False) -> TargetNTK:  # fmt: skip
    """Alignment and predicted (and, with ``fit``, measured) residual curve for target values ``y`` (N x C)
    on the report's points; ``rep`` must hold eigenvectors (``ntk_report(..., vectors=True)``).

    ``lr``: the plain-GD step (default ``default_lr``: N C / lambda_1). ``steps``: the last step of the
    predicted (and fitted) curve (0: ``PREDICTION_STEPS``, no fit)."""
    if rep.vectors is None or rep.coords is None:
        raise InrdiagError("target_ntk needs a report with eigenvectors: ntk_report(..., vectors=True)")
    if lr is None:
        lr = default_lr(rep, int(y.shape[1]))
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
    sched = step_schedule(steps if steps > 0 else PREDICTION_STEPS)
    pred = predicted_psnr(rep.eigenvalues, U, r0, lr, sched)
    notes = ["prediction for plain gradient descent on the linearised network; Adam and other adaptive "
             "optimisers differ"]  # fmt: skip
    if y.shape[1] > 1:
        notes.append("multi-channel target: per-channel kernel approximated by Theta / C")
    lam1 = rep.eigenvalues[0] / y.shape[1]
    if lr * lam1 / x.shape[0] > 2:
        notes.append(f"lr * lambda_1 / N = {lr * lam1 / x.shape[0]:.3g} > 2: linearised GD diverges at this --lr")
    if pred.outside > 1e-12:
        notes.append(f"{pred.outside:.1%} of ||r_0||^2 lies outside the top-{U.shape[1]} eigenvectors and is held "
                     "fixed")  # fmt: skip
    measured = fit_gd(m, x, y, lr, sched) if fit and steps > 0 else None
    return TargetNTK(alignment=alignment(U, y), lr=lr, steps=sched, predicted_psnr=pred.psnr,
                     residual_outside=pred.outside, measured_psnr=measured, notes=notes)  # fmt: skip
