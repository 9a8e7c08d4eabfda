"""Freeze-depth sweeps: fit held-out signals from a cohort's shared encoder with the first k
linear layers frozen, for k = 0..K, beside a from-scratch baseline (cohort-INR paper).

Frozen layers take no gradient and their output is constant, so it is computed once per signal
and the training loop runs only the unfrozen layers.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .train import CohortError, CohortRecipe, encoder_features, head_forward


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
        rows = [SweepRow(r["label"], r["k"], {int(s): list(v) for s, v in r["psnr"].items()}) for r in d["rows"]]
        return cls(CohortRecipe(**d["recipe"]), list(d["train_images"]), list(d["test_images"]), d["steps"],
                   list(d["eval_steps"]), d["lr"], rows, list(d["stable_ranks"]), d["recommended_freeze_depth"],
                   d["measured_best_k"], d["seconds"], list(d.get("notes", [])))  # fmt: skip

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


def fit_from_encoder(
    encoder,
    K: int,
    k: int | None,
    values,
    shape,
    recipe: CohortRecipe,
    steps: int,
    lr: float,
    seed: int,
    eval_steps: list[int],
    device,
) -> tuple[list[float], Any]:
    """Fit one signal: a fresh network whose first K layers are copied from ``encoder`` (none when
    ``k`` is None: the from-scratch baseline), with linear layers 0..k-1 frozen. Returns the PSNR at
    ``eval_steps`` and the trained model."""
    import torch

    from ..fitting.targets import psnr
    from ..grid import make_grid
    from ..models.inits import build_model

    C = values.shape[1]
    model = build_model(recipe.backbone, 2, C, recipe.depth, recipe.width, seed=seed).to(device)
    if k is not None:
        src = encoder.state_dict()
        own = model.state_dict()
        for key in own:
            parts = key.split(".")
            if parts[0] == "encoding" or (parts[0] in ("linears", "norms") and int(parts[1]) < K):
                own[key] = src[key].to(device)
        model.load_state_dict(own)
    frozen = 0 if k is None else k
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
        feats = x if frozen == 0 else encoder_features(model, frozen, x)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    out = []
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        pred = _suffix(model, frozen, feats)
        loss = torch.mean((pred - y) ** 2)
        loss.backward()
        opt.step()
        if not math.isfinite(float(loss.detach())):
            raise CohortError(f"fitting diverged at step {step}; lower --lr")
        if step in eval_steps:
            with torch.no_grad():
                out.append(psnr(_suffix(model, frozen, feats), y))
    return out, model


def _suffix(model, frozen: int, feats):
    """Layers frozen..L-1 on the frozen prefix's output (``frozen`` = 0: the whole network)."""
    if frozen == 0:
        return model(feats)
    hidden = len(model.linears) - 1
    if frozen <= hidden:
        return head_forward(model, frozen, feats)
    raise CohortError(f"cannot freeze {frozen} layers of a network with {hidden} hidden layers")  # pragma: no cover


Progress = Callable[[str, int, int], None]


def freeze_sweep(
    encoder,
    recipe: CohortRecipe,
    train_names: list[str],
    test,
    steps: int = 300,
    lr: float | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    seed: int = 0,
) -> SweepReport:
    """Sweep k = 0..K frozen layers for every held-out image in ``test`` (a CohortData), plus scratch."""
    from ..device import resolve_device, tune_malloc
    from ..spectra import recommend_freeze_depth, weight_stable_rank

    if steps < 1:
        raise CohortError(f"--steps must be >= 1, got {steps}")
    tune_malloc()
    dev = resolve_device(device)
    K = recipe.shared_layers
    lr = recipe.lr if lr is None else lr
    evals = eval_schedule(steps)
    labels = [("scratch (no encoder)", None)] + [
        (f"k={k}" + (" (fine-tune all)" if k == 0 else ""), k) for k in range(K + 1)
    ]
    rows = {label: SweepRow(label, k, {s: [] for s in evals}) for label, k in labels}
    t0 = time.perf_counter()
    total = len(labels) * len(test.names)
    done = 0
    for i, name in enumerate(test.names):
        for label, k in labels:
            scores, _ = fit_from_encoder(encoder, K, k, test.values[i], test.shape, recipe, steps, lr,
                                         seed=seed + 1000 * i + 1, eval_steps=evals, device=dev)  # fmt: skip
            for s, v in zip(evals, scores):
                rows[label].psnr[s].append(v)
            done += 1
            if progress:
                progress(f"{name} {label}", done, total)
    srs = [weight_stable_rank(encoder.linears[j].weight) for j in range(K)]
    # k* = 1 + argmax of the encoder's hidden layers' weight stable ranks (as `inrdiag rank`).
    k_star = recommend_freeze_depth(srs, list(range(K)))
    sweep = [rows[label] for label, k in labels if k is not None]
    best = max(sweep, key=lambda r: (r.mean(steps), -r.k)).k
    notes = []
    if k_star != best:
        notes.append(f"the stable-rank pick k*={k_star} is not the measured best k={best} on these images")
    return SweepReport(recipe, train_names, list(test.names), steps, evals, lr, [rows[label] for label, _ in labels],
                       srs, k_star, best, time.perf_counter() - t0, notes)  # fmt: skip
