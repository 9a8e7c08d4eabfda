"""Freeze-depth sweeps: fit held-out signals from a cohort's shared encoder with the first k
linear layers frozen, for k = 0..K, beside a from-scratch baseline (cohort-INR paper).

Frozen layers take no gradient and their output is constant, so it is computed once per signal
and the training loop runs only the unfrozen layers.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..device import resolve_device, tune_malloc
from ..fitting.optim import adam_loop, training_layout
from ..grid import make_grid
from ..metrics import psnr
from ..models.inits import build_model
from ..models.mlp import CoordMLP
from ..progress import Progress
from ..seeds import check_seed
from ..spectra import recommend_freeze_depth, weight_stable_rank
from .file import is_encoder_key
from .recipe import DEFAULT_SWEEP_STEPS, CohortError, CohortRecipe
from .train import CohortData


@dataclass
class SweepRow:
    """One freeze depth (k frozen linear layers) or the scratch baseline (k = None)."""

    label: str
    k: int | None
    #: step -> PSNR of each held-out image at that step.
    psnr: dict[int, list[float]]

    def mean(self, step: int) -> float:
        return statistics.fmean(self.psnr[step])

    def std(self, step: int) -> float:
        v = self.psnr[step]
        return statistics.stdev(v) if len(v) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "k": self.k,
            "psnr": {str(s): v for s, v in self.psnr.items()},
            "psnr_mean": {str(s): self.mean(s) for s in self.psnr},
            "psnr_std": {str(s): self.std(s) for s in self.psnr},
        }  # fmt: skip


@dataclass
class SweepReport:
    """A freeze-depth sweep: for each depth k, the held-out images' PSNR after fitting new heads on the
    frozen first k layers, beside the encoder's weight stable ranks and the depth they recommend."""

    recipe: CohortRecipe
    train_images: list[str]
    test_images: list[str]
    steps: int
    eval_steps: list[int]
    lr: float
    rows: list[SweepRow]
    #: Weight stable rank of encoder layers 0..K-1.
    stable_ranks: list[float]
    recommended_freeze_depth: int
    measured_best_k: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return self.recommended_freeze_depth == self.measured_best_k

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepReport:
        """The inverse of ``to_dict`` (a run folder's record back into a report)."""
        rows = [SweepRow(label=r["label"], k=r["k"], psnr={int(s): list(v) for s, v in r["psnr"].items()})
                for r in d["rows"]]  # fmt: skip
        return cls(recipe=CohortRecipe(**d["recipe"]), train_images=list(d["train_images"]),
                   test_images=list(d["test_images"]), steps=d["steps"], eval_steps=list(d["eval_steps"]), lr=d["lr"],
                   rows=rows, stable_ranks=list(d["stable_ranks"]),
                   recommended_freeze_depth=d["recommended_freeze_depth"], measured_best_k=d["measured_best_k"],
                   seconds=d["seconds"], notes=list(d.get("notes", [])))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.to_dict(), "train_images": self.train_images, "test_images": self.test_images,
            "steps": self.steps, "eval_steps": self.eval_steps, "lr": self.lr,
            "rows": [r.to_dict() for r in self.rows], "stable_ranks": self.stable_ranks,
            "recommended_freeze_depth": self.recommended_freeze_depth, "measured_best_k": self.measured_best_k,
            "agree": self.agree, "seconds": self.seconds, "notes": self.notes,
        }  # fmt: skip


def eval_schedule(steps: int) -> list[int]:
    """Steps at which PSNR is reported: 100, 500, 1000, ... below ``steps``, and ``steps`` itself."""
    marks = [s for s in (100, 500, 1000, 2000, 5000) if s < steps]
    return marks + [steps]


@dataclass
class EncoderFit:
    """One held-out signal fitted from a cohort's encoder (``fit_from_encoder``)."""

    #: PSNR after each of the ``eval_steps``.
    psnr: list[float]
    #: The trained network (on the fit's device, train mode).
    model: CoordMLP
    #: The training loss of the last step.
    final_loss: float


def fit_from_encoder(
    encoder: CoordMLP,
    K: int,
    k: int | None,
    values: torch.Tensor,
    shape: tuple[int, ...],
    recipe: CohortRecipe,
    steps: int,
    lr: float,
    seed: int,
    eval_steps: list[int],
    device: torch.device | str,
) -> EncoderFit:
    """Fit one signal (``values``, N x C on the grid of ``shape``): a fresh network whose first K layers
    are copied from ``encoder`` (none when ``k`` is None: the from-scratch baseline), with linear layers
    0..k-1 frozen. Returns the PSNR at ``eval_steps`` and the trained model."""
    check_seed(seed, "seed")
    C = values.shape[1]
    model = build_model(recipe.backbone, 2, C, recipe.depth, recipe.width, seed=seed).to(device)
    assert isinstance(model, CoordMLP)
    if k is not None:
        src = encoder.state_dict()
        own = model.state_dict()
        for key in own:
            if is_encoder_key(key, K):
                own[key] = src[key].to(device)
        model.load_state_dict(own)
    frozen = 0 if k is None else k
    hidden = len(model.linears) - 1
    if frozen > hidden:
        raise CohortError(f"cannot freeze {frozen} layers of a network with {hidden} hidden layers")
    for j in range(frozen):
        for p in model.linears[j].parameters():
            p.requires_grad_(False)
        if str(j) in model.norms:
            for p in model.norms[str(j)].parameters():
                p.requires_grad_(False)
    x = make_grid(shape, dtype=torch.float32, device=device)
    y = values.to(device)
    model.eval()  # the frozen prefix is a fixed function (norm layers on their running statistics)
    with torch.no_grad():  # constant: the frozen prefix (no prefix: the raw coordinates)
        feats = x if frozen == 0 else model.features(x, frozen - 1)
    model.train()

    def suffix() -> torch.Tensor:  # layers frozen..L on the frozen prefix's output (frozen = 0: the whole network)
        return model(feats) if frozen == 0 else model.head(feats, frozen)

    def grad_step(step: int) -> torch.Tensor:
        loss = torch.mean((suffix() - y) ** 2)
        loss.backward()
        return loss.detach()

    out: list[float] = []
    marks = set(eval_steps)

    def after_step(step: int) -> None:
        if step in marks:
            with torch.no_grad():
                out.append(psnr(suffix(), y))

    with training_layout([model]):
        run = adam_loop([p for p in model.parameters() if p.requires_grad], lr, steps, grad_step,
                        after_step=after_step, error=CohortError, what="fitting", device=torch.device(device))  # fmt: skip
    return EncoderFit(psnr=out, model=model, final_loss=run.final_loss)


def freeze_sweep(
    encoder: CoordMLP,
    recipe: CohortRecipe,
    train_names: list[str],
    test: CohortData,
    steps: int = DEFAULT_SWEEP_STEPS,
    lr: float | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    seed: int = 0,
) -> SweepReport:
    """Sweep k = 0..K frozen layers for every held-out image in ``test``, plus scratch.
    ``progress(fits done, fits, final loss, final PSNR)`` after each fit."""
    if steps < 1:
        raise CohortError(f"--steps must be >= 1, got {steps}")
    check_seed(seed, "seed (--seed)")
    tune_malloc()
    dev = resolve_device(device)
    K = recipe.shared_layers
    rate = recipe.learning_rate if lr is None else lr
    evals = eval_schedule(steps)
    labels: list[tuple[str, int | None]] = [("scratch (no encoder)", None)] + [
        (f"k={k}" + (" (fine-tune all)" if k == 0 else ""), k) for k in range(K + 1)
    ]
    rows = {label: SweepRow(label=label, k=k, psnr={s: [] for s in evals}) for label, k in labels}
    t0 = time.perf_counter()
    total = len(labels) * len(test.names)
    done = 0
    for i in range(len(test.names)):
        for label, k in labels:
            res = fit_from_encoder(encoder, K, k, test.values[i], test.shape, recipe, steps, rate,
                                   seed=(seed + 1000 * i + 1) % 2**32, eval_steps=evals, device=dev)  # fmt: skip
            for s, v in zip(evals, res.psnr):
                rows[label].psnr[s].append(v)
            done += 1
            if progress is not None:
                progress(done, total, res.final_loss, res.psnr[-1])
    srs = [weight_stable_rank(encoder.linear(j).weight) for j in range(K)]
    # k* = 1 + argmax of the encoder's hidden layers' weight stable ranks (as `inrdiag rank`).
    k_star = recommend_freeze_depth(srs, list(range(K)))
    sweep = [rows[label] for label, k in labels if k is not None]
    best = max(sweep, key=lambda r: (r.mean(steps), -(r.k or 0))).k
    assert best is not None
    notes = []
    if k_star != best:
        notes.append(f"the stable-rank pick k*={k_star} is not the measured best k={best} on these images")
    return SweepReport(recipe=recipe, train_images=train_names, test_images=list(test.names), steps=steps,
                       eval_steps=evals, lr=rate, rows=[rows[label] for label, _ in labels], stable_ranks=srs,
                       recommended_freeze_depth=k_star, measured_best_k=best, seconds=time.perf_counter() - t0,
                       notes=notes)  # fmt: skip
