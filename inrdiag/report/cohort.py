"""Tables and plots for ``cohort-train`` and ``freeze-sweep``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import console, fmt, pyplot, save_figure, sparkline

if TYPE_CHECKING:
    from ..cohort.freeze import SweepReport
    from ..cohort.train import CohortTrainResult


def render_cohort_train(res: CohortTrainResult, path: str) -> None:
    from rich.table import Table

    c = console()
    r = res.recipe
    c.print(f"cohort of {len(res.names)} images, backbone {r.backbone}, {r.depth}x{r.width}, "
            f"{r.shared_layers} shared layers, {r.size}x{r.size}, {r.steps} steps, Adam lr {r.lr:g}, seed {r.seed}")  # fmt: skip
    t = Table(title="PSNR per image (its own head)", title_justify="left")
    t.add_column("head")
    t.add_column("image")
    t.add_column("PSNR (dB)", justify="right")
    for d, (name, p) in enumerate(zip(res.names, res.psnr)):
        t.add_row(str(d), name, f"{p:.2f}")
    c.print(t)
    c.print(f"mean PSNR {res.psnr_mean:.2f} dB; trained in {res.seconds:.1f} s; saved {path}")
    for s in res.skipped:
        c.print(f"skipped (not an image): {s}")
    for s in res.resized:
        c.print(f"converted: {s}")


def render_sweep(rep: SweepReport) -> None:
    from rich.table import Table

    c = console()
    r = rep.recipe
    c.print(f"freeze sweep: backbone {r.backbone}, {r.depth}x{r.width}, encoder K={r.shared_layers} layers, "
            f"{len(rep.train_images)} cohort images, {len(rep.test_images)} held-out: {', '.join(rep.test_images)}")  # fmt: skip
    c.print(
        f"each held-out image fitted for {rep.steps} steps, Adam lr {rep.lr:g}; PSNR mean ± std over held-out images"
    )
    t = Table(title_justify="left")
    t.add_column("frozen layers")
    for s in rep.eval_steps:
        t.add_column(f"PSNR @ {s}", justify="right")
    t.add_column("", justify="left")
    for row in rep.rows:
        marks = []
        if row.k == rep.recommended_freeze_depth:
            marks.append("k* (stable rank)")
        if row.k == rep.measured_best_k:
            marks.append("best measured")
        cells = [f"{row.mean(s):.2f} ± {row.std(s):.2f}" for s in rep.eval_steps]
        t.add_row(row.label, *cells, ", ".join(marks))
    c.print(t)
    curve = "  ".join(f"{j}:{fmt(v)}" for j, v in enumerate(rep.stable_ranks))
    c.print(f"encoder weight stable rank by layer  {sparkline(rep.stable_ranks)}  {curve}")
    verdict = "[green]agree[/green]" if rep.agree else "[yellow]disagree[/yellow]"
    c.print(f"recommended k* = {rep.recommended_freeze_depth}, measured best k = {rep.measured_best_k}: {verdict}")
    for n in rep.notes:
        c.print(f"note: {n}")
    c.print(f"[dim]{rep.seconds:.1f} s[/dim]")


def plot_sweep(rep: SweepReport, path: str, force: bool = False) -> None:
    """PSNR after the last step against the number of frozen layers k (mean ± std over held-out images),
    the scratch baseline, the encoder's weight stable rank (right axis, from 0), and k* / the measured
    best k marked on the plot itself. The legend sits below the axes, never on the data."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.6, 4.8))
    sweep = [r for r in rep.rows if r.k is not None]
    ks = [r.k for r in sweep]
    final = rep.steps
    means = [r.mean(final) for r in sweep]
    ax.errorbar(ks, means, yerr=[r.std(final) for r in sweep], marker="o", capsize=3, color="tab:blue",
                label=f"PSNR after {final} steps, mean ± std over {len(rep.test_images)} held-out")  # fmt: skip
    scratch = next(r for r in rep.rows if r.k is None)
    ax.axhline(scratch.mean(final), color="grey", ls="--", lw=0.8, label="from scratch (mean)")
    ax.set_xlabel("frozen linear layers k")
    ax.set_xticks(ks)
    ax.set_ylabel("PSNR (dB)")
    ks_, kb = rep.recommended_freeze_depth, rep.measured_best_k
    ax.axvline(ks_, color="tab:red", ls=":", lw=1.2, label=f"k* = {ks_} (highest weight stable rank)")
    ax.axvline(kb, color="tab:green", ls="-.", lw=1.2, label=f"measured best k = {kb}")
    for k, text, col in ((ks_, "k*", "tab:red"), (kb, "best", "tab:green")):
        ax.annotate(text, xy=(k, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", color=col, fontsize=9)  # fmt: skip
    ax2 = ax.twinx()
    ax2.plot([j + 1 for j in range(len(rep.stable_ranks))], rep.stable_ranks, color="tab:red", marker="s", lw=1,
             alpha=0.7, label="weight stable rank of layer k-1 (right axis)")  # fmt: skip
    ax2.set_ylabel("weight stable rank", color="tab:red")
    ax2.set_ylim(0, max(rep.stable_ranks + [1.0]) * 1.1)
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1,
              frameon=False)  # fmt: skip
    agree = "agree" if rep.agree else "disagree"
    ax.set_title(f"freeze sweep ({rep.recipe.backbone}, K={rep.recipe.shared_layers}): k* and best k {agree}")
    fig.tight_layout()
    save_figure(fig, path, force)
    plt.close(fig)
