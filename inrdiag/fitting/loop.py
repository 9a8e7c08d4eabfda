# NOTE FROM THE LEAD: read /work/wt/fitcohort/LEAD_NOTES_READ_FIRST.md now (rules, deadline 16:00 UTC, commit often). Delete this line when read.
"""Fit a coordinate MLP to an image or occupancy target (DESIGN.md section 5).

Loss: MSE on [0, 1] values for images (metric PSNR), BCE-with-logits for occupancy (metric IoU at
0.5). Optimiser: Adam (torch defaults, betas 0.9/0.999; fused where available), constant learning rate. Batches: the full
grid by default when it has at most ``FULL_BATCH_MAX`` points, else ``SAMPLED_BATCH`` points drawn
uniformly with replacement each step. Deterministic: the model's init and the batch sampling draw
from generators seeded with ``seed``; on the CPU the same seed gives the same numbers.

The loop is engine code: no printing; ``progress(step, steps, loss, metric)`` is called by the
caller's choice of UI (the CLI draws a rich progress bar).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..device import resolve_device, tune_malloc
from ..errors import InrdiagError
from ..grid import check_memory
from ..models.inits import build_model, build_spec, get_scheme
from ..models.predict import predict
from ..models.spec import ArchSpec
from ..progress import Progress
from ..seeds import check_seed
from ..signals.kinds import loss_function
from ..spectra import DEFAULT_TOL, layer_ranks
from .defaults import (
    DEFAULT_DEPTH,
    DEFAULT_INIT,
    DEFAULT_LR,
    DEFAULT_STEPS,
    DEFAULT_WIDTH,
    FULL_BATCH_MAX,
    SAMPLED_BATCH,
)
from .optim import REPORT_POINTS, adam_loop, is_report_step, report_every, training_layout
from .targets import METRIC_NAME, Target, metric

#: Most CPU threads accepted (torch's set_num_threads takes a C int; no machine has more cores).
MAX_THREADS = 4096
#: Held-out metric records per fit (--holdout-stride), evenly spaced, plus the first and the last step.
HELDOUT_POINTS = 50

__all__ = ["FitConfig", "FitResult", "Progress", "RankRecord", "fit", "holdout_mask", "provenance"]


@dataclass
class FitConfig:
    """What to fit and how (every field is recorded in the checkpoint's provenance)."""

    #: Inlet scheme, see ``inrdiag.models.inits.SCHEMES``.
    init: str = DEFAULT_INIT
    #: Hidden layers and their width.
    depth: int = DEFAULT_DEPTH
    width: int = DEFAULT_WIDTH
    steps: int = DEFAULT_STEPS
    #: Adam learning rate (constant).
    lr: float = DEFAULT_LR
    #: Points per step; None: full batch up to FULL_BATCH_MAX points, else SAMPLED_BATCH sampled.
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    #: Every N steps record every hidden layer's rank on the target grid (0: never).
    track_rank: int = 0
    #: >1: fit on grid indices that are multiples of the stride on every axis; test on the rest.
    holdout_stride: int = 1
    #: Numerical-rank tolerance for the rank records.
    tol: float = DEFAULT_TOL
    #: Record the loss/metric curve this many times (evenly spaced, plus the first and the last step).
    curve_points: int = REPORT_POINTS
    #: Tune glibc malloc at the start (see ``tune_malloc``): 1.3-1.9x faster full-batch CPU steps.
    tune_malloc: bool = True
    #: CPU threads for the fit (None: torch's default, one per core). On a machine shared with
    #: other jobs, 1 thread can be several times faster than oversubscribed cores (docs/performance.md).
    threads: int | None = None

    def validate(self) -> None:
        """Raise an InrdiagError naming the field (and its flag), the value and what is allowed."""
        if not isinstance(self.init, str):
            raise InrdiagError(f"--init must be a scheme name (FitConfig.init, a str), got {self.init!r}")
        if self.init != "keep":  # "keep": a user's module fitted with the init its code gave it
            get_scheme(self.init)
        for name in ("depth", "width", "steps"):
            _int_field(name, getattr(self, name), 1)
        _positive_number("lr", self.lr)
        if self.batch_size is not None:
            _int_field("batch_size", self.batch_size, 1)
        _int_field("track_rank", self.track_rank, 0)
        if self.threads is not None:
            _int_field("threads", self.threads, 1)
            if self.threads > MAX_THREADS:
                raise InrdiagError(f"--threads must be at most {MAX_THREADS} (FitConfig.threads), got {self.threads}")
        _int_field("holdout_stride", self.holdout_stride, 1)
        _int_field("curve_points", self.curve_points, 1)
        _positive_number("tol", self.tol)
        if not isinstance(self.device, str):
            raise InrdiagError(
                f"--device must be auto, cpu, cuda or cuda:N (FitConfig.device, a str), got {self.device!r}"
            )
        if not isinstance(self.tune_malloc, bool):
            raise InrdiagError(f"FitConfig.tune_malloc must be True or False, got {self.tune_malloc!r}")
        check_seed(self.seed, "seed (--seed)")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _int_field(name: str, value: Any, low: int) -> None:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InrdiagError(f"{flag} must be an integer >= {low} (FitConfig.{name}), got {value!r}")
    if int(value) < low:
        raise InrdiagError(f"{flag} must be >= {low} (FitConfig.{name}), got {value}")


def _positive_number(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (float(value) > 0 and math.isfinite(value))
    ):
        raise InrdiagError(f"--{name} must be a positive number (FitConfig.{name}), got {value!r}")


def fit_memory(spec: ArchSpec, points: int, batch: int) -> tuple[float, str]:
    """Bytes a fit of an MLP ``spec`` on ``points`` grid points with ``batch`` points per step needs, roughly,
    and the flag that lowers the largest part.

    Parameters P: weights, gradients and Adam's two moments in float32 (16 P) plus the float64 copy for the
    inlet rank at init (8 P); Gram matrices of every hidden layer and their eigendecomposition (16 sum w^2);
    training activations and their gradients (16 batch * (sum w + encoded)); coordinates, values and the
    final prediction on the whole grid.
    """
    params = sum(o * i + o for o, i in spec.layer_shapes) + 4 * sum(spec.hidden[k] for k in spec.batchnorm)
    parts = {
        "--width or --depth": 24.0 * params + 16.0 * sum(w * w for w in spec.hidden),
        "--batch-size": 16.0 * batch * (sum(spec.hidden) + spec.encoded_features),
        "--size": 4.0 * points * (2 * spec.in_features + 2 * spec.out_features),
    }
    return sum(parts.values()), max(parts, key=lambda k: parts[k])


@dataclass
class RankRecord:
    step: int
    #: Effective rank and numerical rank of every hidden layer (inlet first).
    effective: list[float]
    numerical: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "effective_rank": self.effective, "numerical_rank": self.numerical}


@dataclass
class FitResult:
    """One fit: the config, the target, the final metrics, the loss and metric curves, the rank of
    every hidden layer before and after (and over training with ``track_rank``), speed and notes;
    ``model`` is the fitted network."""

    config: FitConfig
    target: dict[str, Any]
    metric_name: str
    #: Metric of the final model (eval mode) on the fitted points, the held-out points, all points.
    metric: float
    heldout_metric: float | None
    full_metric: float
    final_loss: float
    #: Inlet (layer 0) rank statistics at initialisation on the full target grid.
    init_inlet_effective_rank: float
    init_inlet_numerical_rank: int
    curve_step: list[int]
    curve_loss: list[float]
    curve_metric: list[float]
    ranks: list[RankRecord]
    seconds: float
    steps_per_second: float
    device: str
    batch_size: int
    train_points: int
    parameters: int
    model: Any = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    #: With --holdout-stride: the metric on the held-out points (eval mode) at about 50 steps.
    heldout_step: list[int] = field(default_factory=list)
    heldout_curve: list[float] = field(default_factory=list)
    #: What the target's own evaluation adds (dense held-out IoU of a mesh, per-frame PSNR of a video, SNR).
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(), "target": self.target, "metric_name": self.metric_name,
            "metric": self.metric, "heldout_metric": self.heldout_metric, "full_metric": self.full_metric,
            "final_loss": self.final_loss,
            "init_inlet": {"effective_rank": self.init_inlet_effective_rank,
                           "numerical_rank": self.init_inlet_numerical_rank},
            "curve": {"step": self.curve_step, "loss": self.curve_loss, "metric": self.curve_metric},
            "heldout_curve": {"step": self.heldout_step, "metric": self.heldout_curve},
            "ranks": [r.to_dict() for r in self.ranks], "seconds": self.seconds,
            "steps_per_second": self.steps_per_second, "device": self.device, "batch_size": self.batch_size,
            "train_points": self.train_points, "parameters": self.parameters, "notes": self.notes,
            "details": self.details,
        }  # fmt: skip


def holdout_mask(shape: tuple[int, ...], stride: int) -> torch.Tensor:
    """Bool vector over the flattened grid: True where every index is a multiple of ``stride``."""
    axes = [torch.arange(n) % stride == 0 for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    m = mesh[0]
    for x in mesh[1:]:
        m = m & x
    return m.reshape(-1)


def fit(target: Target, config: FitConfig | None = None, progress: Progress | None = None,
        model: nn.Module | None = None) -> FitResult:  # fmt: skip
    """Fit a new MLP (built by ``config.init``) to ``target`` (``inrdiag.fitting.targets.Target``), or
    ``model`` (your own module) when given. ``progress(step, steps, loss, metric)`` on report steps."""
    if not isinstance(target, Target):
        raise InrdiagError(f"fit needs a Target (inrdiag.load_target(path)), got {type(target).__name__}")
    if config is not None and not isinstance(config, FitConfig):
        raise InrdiagError(f"config must be a FitConfig or None, got {type(config).__name__}")
    if progress is not None and not callable(progress):
        raise InrdiagError(f"progress must be a callable (step, steps, loss, metric) or None, got {progress!r}")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise InrdiagError(f"model must be a torch.nn.Module (your own INR) or None, got {type(model).__name__}")
    cfg = config or FitConfig()
    cfg.validate()
    if cfg.threads is None:
        return _fit(target, cfg, progress, model)
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _fit(target, cfg, progress, model)
    finally:
        torch.set_num_threads(before)


def _prepare_user_model(model: nn.Module, target: Target, cfg: FitConfig, batch: int, notes: list[str]) -> nn.Module:
    """Check the user's module against the target (d coordinates in, C outputs out) and the memory a fit
    needs; ``cfg.init`` other than "keep" re-initialises its inlet (the first nn.Linear it calls)."""
    from ..models.adapter import as_adapter

    ad = as_adapter(model, in_features=target.dim)
    if ad.out_features != target.channels:
        raise InrdiagError(f"your module gives {ad.out_features} output(s) per point; the target has "
                           f"{target.channels} channel(s)")  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    widths = sum(layer.module.out_features for layer in ad.layers)
    need = 4.0 * (4 * params + 3 * batch * (widths + target.dim) + 2 * target.points * (target.dim + target.channels))
    check_memory(need, f"fitting your module ({params:,} parameters) with {batch:,} points per step", "--batch-size")
    if cfg.init != "keep":
        from ..models.usercode import reinit_module_inlet

        notes.extend(reinit_module_inlet(ad, cfg.init, cfg.seed))
    else:
        notes.append("init: your module as its code built it (--init keep)")
    return model


def _fit(target: Target, cfg: FitConfig, progress: Progress | None, user_model: nn.Module | None = None) -> FitResult:
    notes: list[str] = list(getattr(target, "notes", []))
    if cfg.tune_malloc and not tune_malloc():
        notes.append("glibc malloc tuning not available on this platform")
    if cfg.holdout_stride > 1 and cfg.holdout_stride >= max(target.shape):
        raise InrdiagError(f"--holdout-stride {cfg.holdout_stride} leaves one point to fit on the {target.shape} grid; "
                           f"it must be below the longest side ({max(target.shape)})")  # fmt: skip
    dev = resolve_device(cfg.device)
    n_fit = target.points if cfg.holdout_stride == 1 else math.prod(-(-s // cfg.holdout_stride) for s in target.shape)
    batch = min(cfg.batch_size or (n_fit if n_fit <= FULL_BATCH_MAX else SAMPLED_BATCH), n_fit)
    model: nn.Module
    if user_model is None:
        spec = build_spec(cfg.init, target.dim, target.channels, cfg.depth, cfg.width)
        need, flag = fit_memory(spec, target.points, batch)
        check_memory(need, f"fitting a {cfg.depth}x{cfg.width} MLP ({cfg.init}) with {batch:,} points per step", flag)
        model = build_model(cfg.init, target.dim, target.channels, cfg.depth, cfg.width, cfg.seed)
    else:  # the user's own module, as their code built it (its init; --init only re-initialises its inlet)
        model = _prepare_user_model(user_model, target, cfg, batch, notes)
    init_rank = layer_ranks(model, target.shape, cfg.tol)[0]
    model = model.to(dev)

    coords_all = target.coords(dtype=torch.float32, device=dev)
    values_all = target.values.to(dev)
    mask = holdout_mask(target.shape, cfg.holdout_stride).to(dev) if cfg.holdout_stride > 1 else None
    coords = coords_all if mask is None else coords_all[mask]
    values = values_all if mask is None else values_all[mask]
    n = coords.shape[0]
    batch = min(cfg.batch_size or (n if n <= FULL_BATCH_MAX else SAMPLED_BATCH), n)  # n == n_fit
    full = batch == n
    if getattr(getattr(model, "spec", None), "batchnorm", None) and batch < 2:
        raise InrdiagError(f"batch norm needs at least 2 points per batch, got {batch}; raise --batch-size")

    kind = target.kind
    loss_fn = loss_function(kind)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    curve_step: list[int] = []
    curve_loss: list[float] = []
    curve_metric: list[float] = []
    ranks: list[RankRecord] = []
    held_every = report_every(cfg.steps, HELDOUT_POINTS)
    held_step: list[int] = []
    held_curve: list[float] = []
    if cfg.track_rank:
        ranks.append(_rank_record(0, model, target.shape, cfg.tol, dev))
    # The last step's batch and prediction, for the metric of a report step (no recomputation).
    last: dict[str, torch.Tensor] = {}

    def grad_step(step: int) -> torch.Tensor:
        if full:
            x, y = coords, values
        else:
            idx = torch.randint(0, n, (batch,), device=dev, generator=gen)
            x, y = coords[idx], values[idx]
        pred = model(x)
        loss = loss_fn(pred, y)
        loss.backward()
        last["pred"], last["y"] = pred, y
        return loss.detach()

    def on_report(step: int, loss: float) -> float:
        m = metric(kind, last["pred"], last["y"])
        curve_step.append(step)
        curve_loss.append(loss)
        curve_metric.append(m)
        return m

    side_time = 0.0  # held-out and rank evaluations, not counted in the fit's time

    def after_step(step: int) -> None:
        nonlocal side_time
        last.clear()
        if mask is not None and is_report_step(step, cfg.steps, held_every):
            r0 = time.perf_counter()
            model.eval()  # no gradients and no batch-norm statistics updated: training is unchanged
            held_step.append(step)
            held_curve.append(metric(kind, predict(model, coords_all[~mask]), values_all[~mask]))
            model.train()
            side_time += time.perf_counter() - r0
        if cfg.track_rank and (step % cfg.track_rank == 0 or step == cfg.steps):
            r0 = time.perf_counter()
            ranks.append(_rank_record(step, model, target.shape, cfg.tol, dev))
            model.train()
            side_time += time.perf_counter() - r0

    model.train()
    t0 = time.perf_counter()
    with training_layout([model]):
        adam_loop(model.parameters(), cfg.lr, cfg.steps, grad_step, on_report=on_report, after_step=after_step,
                  progress=progress, every=report_every(cfg.steps, cfg.curve_points), what="the fit", device=dev)  # fmt: skip
    seconds = time.perf_counter() - t0 - side_time

    model.eval()
    out = predict(model, coords_all)
    final_loss = float(loss_fn(out if mask is None else out[mask], values))
    fitted = metric(kind, out if mask is None else out[mask], values)
    heldout = None if mask is None else metric(kind, out[~mask], values_all[~mask])
    full_metric = metric(kind, out, values_all)
    details = target.evaluate(model, out) if getattr(target, "evaluate", None) else {}
    notes += [n for n in (getattr(target, "meta", None) or {}).get("notes", []) if n not in notes]
    return FitResult(
        config=cfg, target=target.to_dict(), metric_name=METRIC_NAME[kind], metric=fitted, heldout_metric=heldout,
        full_metric=full_metric, final_loss=final_loss,
        init_inlet_effective_rank=init_rank.effective_rank, init_inlet_numerical_rank=init_rank.numerical_rank,
        curve_step=curve_step, curve_loss=curve_loss, curve_metric=curve_metric, ranks=ranks, seconds=seconds,
        steps_per_second=cfg.steps / seconds if seconds > 0 else math.inf, device=str(dev), batch_size=batch,
        train_points=n, parameters=sum(p.numel() for p in model.parameters()), model=model.cpu(), notes=notes,
        heldout_step=held_step, heldout_curve=held_curve, details=details,
    )  # fmt: skip


def _rank_record(step: int, model: nn.Module, shape: tuple[int, ...], tol: float, dev: torch.device) -> RankRecord:
    stats = layer_ranks(model, shape, tol, dev)
    return RankRecord(step, [s.effective_rank for s in stats], [s.numerical_rank for s in stats])


def provenance(result: FitResult) -> dict[str, Any]:
    """What ``checkpoint.save`` records about a fit."""
    c = result.config
    return {
        "init": c.init, "target": result.target["path"], "target_sha256": result.target["sha256"],
        "target_shape": result.target["shape"], "steps": c.steps, "lr": c.lr, "optimizer": "adam",
        "seed": c.seed, "depth": c.depth, "width": c.width, "batch_size": result.batch_size,
        "holdout_stride": c.holdout_stride, "threads": c.threads, "metric_name": result.metric_name, "metric": result.metric,
        "heldout_metric": result.heldout_metric, "device": result.device,
        "target_kind": result.target["kind"], "target_meta": result.target.get("meta", {}),
    }  # fmt: skip
