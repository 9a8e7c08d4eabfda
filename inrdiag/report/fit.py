"""Tables, plots and reconstructions for ``fit``, ``compare`` and ``reinit``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import CYCLE, INLET_COLOR, console, fmt, pyplot, save_figure

if TYPE_CHECKING:
    from torch import nn

    from ..fitting.loop import FitResult
    from ..fitting.targets import Target
    from ..study.single import CompareResult


def _metric(name: str, x: float | None) -> str:
    if x is None:
        return "-"
    if name == "PSNR":
        return "inf" if math.isinf(x) else f"{x:.2f} dB"
    return f"{x:.4f}"


def render_fit(res: FitResult, saved: dict[str, str] | None = None) -> None:
    from rich.table import Table

    c = console()
    cfg = res.config
    t = Table(title=f"fit {res.target['path']} ({'x'.join(map(str, res.target['shape']))}, {res.target['kind']})",
              title_justify="left")  # fmt: skip
    t.add_column("")
    t.add_column("value", justify="right")
    t.add_row("init", cfg.init)
    t.add_row("network", f"{cfg.depth}x{cfg.width}, {res.parameters:,} parameters")
    t.add_row("training", f"{cfg.steps} Adam steps, lr {cfg.lr:g}, batch {res.batch_size:,} of "
                          f"{res.train_points:,} points, seed {cfg.seed}, {res.device}")  # fmt: skip
    t.add_row("inlet rank at init", f"effective {res.init_inlet_effective_rank:.1f}, "
                                    f"numerical {res.init_inlet_numerical_rank}")  # fmt: skip
    label = "fitted points" if res.heldout_metric is not None else "all points"
    t.add_row(f"{res.metric_name} ({label})", _metric(res.metric_name, res.metric))
    if res.heldout_metric is not None:
        t.add_row(f"{res.metric_name} (held-out points)", _metric(res.metric_name, res.heldout_metric))
        t.add_row(f"{res.metric_name} (all points)", _metric(res.metric_name, res.full_metric))
    t.add_row("final loss", fmt(res.final_loss, 4))
    for key, value in getattr(res, "details", {}).items():  # the target's own evaluation (inrdiag.signals)
        if isinstance(value, float):
            t.add_row(key.replace("_", " "), f"{value:.2f} dB" if "psnr" in key or "snr" in key else f"{value:.4f}")
    t.add_row("speed", f"{res.steps_per_second:.1f} steps/s ({res.seconds:.1f} s)")
    c.print(t)
    if res.ranks:
        rt = Table(title="effective rank of each hidden layer on the target grid (--track-rank)", title_justify="left")
        rt.add_column("step", justify="right")
        for k in range(len(res.ranks[0].effective)):
            rt.add_column("inlet" if k == 0 else f"layer {k}", justify="right")
        for r in res.ranks:
            rt.add_row(str(r.step), *(f"{e:.1f}" for e in r.effective))
        c.print(rt)
    for what, path in (saved or {}).items():
        c.print(f"wrote {what}: {path}")
    for note in res.notes:
        c.print(f"note: {note}")


def plot_fit(res: FitResult, path: str, force: bool = False, target: Target | None = None) -> None:
    """Top: loss, metric (training batch, and held-out points with --holdout-stride) and, with rank records,
    effective rank per hidden layer with the width as reference. Bottom, given the target: target,
    reconstruction and error map (volumes: the middle slice of each)."""
    plt = pyplot()
    n = 3 if res.ranks else 2
    rows = 2 if target is not None else 1
    cols = 3 if target is not None else n
    fig = plt.figure(figsize=(4.3 * cols, 3.5 * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    axes[0].semilogy(res.curve_step, res.curve_loss, color=CYCLE[0])
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    unit = " (dB)" if res.metric_name == "PSNR" else ""
    axes[1].plot(res.curve_step, res.curve_metric, color=CYCLE[0], label="training batch")
    if res.heldout_curve:
        axes[1].plot(res.heldout_step, res.heldout_curve, "o-", ms=3, color=CYCLE[3],
                     label=f"held-out points (stride {res.config.holdout_stride})")  # fmt: skip
    axes[1].set_xlabel("step")
    axes[1].set_ylabel(res.metric_name + unit)
    if res.metric_name == "IoU":
        axes[1].set_ylim(0, 1)
    axes[1].legend(loc="lower right")
    if res.ranks:
        steps = [r.step for r in res.ranks]
        last = len(res.ranks[0].effective)
        for k in range(last):
            axes[2].plot(steps, [r.effective[k] for r in res.ranks], marker=".",
                         color=INLET_COLOR if k == 0 else CYCLE[(k - 1) % len(CYCLE)],
                         lw=2 if k == 0 else 1.2, label="inlet" if k == 0 else f"hidden {k}")  # fmt: skip
        axes[2].axhline(res.config.width, color="0.4", ls="--", lw=0.8)
        axes[2].text(steps[-1], res.config.width, f"width {res.config.width}", ha="right", va="bottom", fontsize=7)
        axes[2].set_ylim(0, res.config.width * 1.08)
        axes[2].set_xlabel("step")
        axes[2].set_ylabel("effective rank on the target grid")
        axes[2].legend(loc="center right")
    label = _metric(res.metric_name, res.metric)
    held = f", held-out {_metric(res.metric_name, res.heldout_metric)}" if res.heldout_metric is not None else ""
    fig.suptitle(f"fit {res.config.depth}x{res.config.width}, init {res.config.init}: {res.metric_name} {label}{held}")
    if target is not None:
        _images(fig, res.model, target, rows, cols)
    fig.tight_layout()
    save_figure(fig, path, force)
    plt.close(fig)


def _images(fig: Any, model: nn.Module, target: Target, rows: int, cols: int) -> None:
    """Target, reconstruction and |error| (images) or truth, prediction and their disagreement (volumes:
    middle slice along the first axis), each with its own colour bar where values are not [0, 1]."""
    import numpy as np
    import torch

    from ..models.predict import predict

    model = model.eval()
    out = predict(model, target.coords(dtype=next(model.parameters()).dtype)).to(torch.float64)
    if target.kind == "image":
        shape = (*target.shape, target.channels)
        truth = target.values.to(torch.float64).reshape(shape).numpy()
        pred = out.clamp(0, 1).reshape(shape).numpy()
        err = np.abs(pred - truth).mean(-1)
        panels = [
            ("target", truth, None),
            ("reconstruction", pred, None),
            ("|error| (mean over channels)", err, "magma"),
        ]
    else:
        mid = target.shape[0] // 2
        truth = (target.values[:, 0] > 0.5).reshape(target.shape).numpy()[mid]
        pred = (out[:, 0] > 0).reshape(target.shape).numpy()[mid]
        panels = [("occupancy (middle slice)", truth, "gray"), ("prediction: logit > 0", pred, "gray"),
                  ("disagreement", truth != pred, "magma")]  # fmt: skip
    for i, (title, img, cmap) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, cols + 1 + i)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
            cmap = cmap or "gray"
        im = ax.imshow(np.clip(img, 0, 1) if img.dtype != bool else img.astype(float), cmap=cmap, vmin=0,
                       vmax=1 if i < 2 else None, interpolation="nearest")  # fmt: skip
        if i == 2:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(title)
        ax.axis("off")


def render_compare(res: CompareResult, saved: dict[str, str] | None = None) -> None:
    from rich.table import Table

    c = console()
    cfg = res.config
    seeds = res.rows[0].seeds if res.rows else []
    t = Table(title=f"compare on {res.target['path']} ({'x'.join(map(str, res.target['shape']))}): "
                    f"{cfg.depth}x{cfg.width}, {cfg.steps} Adam steps, lr {cfg.lr:g}, seeds {seeds}",
              title_justify="left")  # fmt: skip
    heldout = any(r.heldout_metrics is not None for r in res.rows)
    cols = ["init", f"{res.metric_name} mean ± std" + (" (fitted)" if heldout else "")]
    if heldout:
        cols.append(f"{res.metric_name} held-out")
    cols += ["inlet eff. rank at init", "inlet num. rank at init", "s/run"]
    for col in cols:
        t.add_column(col, justify="left" if col == "init" else "right")
    digits = 2 if res.metric_name == "PSNR" else 4
    for r in res.rows:
        m, s = r.mean_std
        row = [r.init, f"{m:.{digits}f} ± {s:.{digits}f}"]
        if heldout:
            ho = r.heldout_mean_std
            row.append("-" if ho is None else f"{ho[0]:.{digits}f} ± {ho[1]:.{digits}f}")
        eff = sum(r.inlet_effective_rank) / len(r.inlet_effective_rank)
        num = sum(r.inlet_numerical_rank) / len(r.inlet_numerical_rank)
        row += [f"{eff:.1f}", f"{num:.0f}", f"{sum(r.seconds) / len(r.seconds):.1f}"]
        t.add_row(*row)
    c.print(t)
    unit = " dB" if res.metric_name == "PSNR" else ""
    for key in ("dense_heldout_iou", "overall_psnr", "snr_db"):  # the target's own evaluation (inrdiag.signals)
        for r in res.rows:
            xs = [d[key] for d in getattr(r, "details", []) if isinstance(d.get(key), float)]
            if xs:
                m, s = r._mean_std(xs)
                c.print(f"{r.init}: {key.replace('_', ' ')} {m:.{digits if key.endswith('iou') else 2}f} ± "
                        f"{s:.{digits if key.endswith('iou') else 2}f} over {len(xs)} seed(s)")  # fmt: skip
    c.print(f"[dim]{res.metric_name}{unit} of the final model (eval mode); rank on the {res.target['points']:,}-point "
            f"target grid, tol {cfg.tol:g}; std over seeds (n-1)[/dim]")  # fmt: skip
    for what, path in (saved or {}).items():
        c.print(f"wrote {what}: {path}")


def plot_compare(res: CompareResult, path: str, force: bool = False) -> None:
    """Left: metric curve per init, mean over seeds with a ± std band. Right: final metric against inlet
    effective rank at init, mean ± std over seeds (seeds as faint points). PDF/SVG when the path says so."""
    import numpy as np

    plt = pyplot()
    unit = " (dB)" if res.metric_name == "PSNR" else ""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.5, 4.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(res.rows):
        col = colors[i % len(colors)]
        curves = res.curves.get(row.init, [])
        if curves:
            m = np.array([c["metric"] for c in curves], dtype=float)
            mu, sd = m.mean(axis=0), (m.std(axis=0, ddof=1) if len(m) > 1 else np.zeros(m.shape[1]))
            a.plot(curves[0]["step"], mu, color=col, lw=1.3, label=row.init)
            a.fill_between(curves[0]["step"], mu - sd, mu + sd, color=col, alpha=0.2, lw=0)
        mean, std = row.mean_std
        eff = sum(row.inlet_effective_rank) / len(row.inlet_effective_rank)
        b.scatter(row.inlet_effective_rank, row.metrics, color=col, alpha=0.35, s=14)
        b.errorbar([eff], [mean], yerr=[std], color=col, marker="o", capsize=4,
                   label=f"{row.init}: {_metric(res.metric_name, mean)} ± {std:.2f}")  # fmt: skip
    n = len(res.rows[0].seeds) if res.rows else 0
    a.set_xlabel("step")
    a.set_ylabel(f"{res.metric_name}{unit}, training batch")
    a.set_title(f"mean over {n} seed(s), band ± std")
    a.legend(fontsize=8, loc="lower right")
    b.set_xlabel("inlet effective rank at init")
    b.set_ylabel(f"final {res.metric_name}{unit}")
    b.set_title("final metric: mean ± std (faint: each seed)")
    b.legend(fontsize=8, loc="best")
    cfg = res.config
    fig.suptitle(f"compare on {Path(res.target['path']).name}: {cfg.depth}x{cfg.width}, {cfg.steps} Adam steps, "
                 f"lr {cfg.lr:g}")  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path, force)
    plt.close(fig)


def render_reinit(info: dict) -> None:
    c = console()
    c.print(f"re-initialised the inlet (linear layer 0, {info['inlet_shape'][0]}x{info['inlet_shape'][1]}) of "
            f"{info['source']} with {info['scheme']}; other layers unchanged")  # fmt: skip
    for note in info.get("notes", []):
        c.print(f"note: {note}", markup=False)
    c.print(f"wrote {info['output']}  (check it: inrdiag rank {info['output']})")
