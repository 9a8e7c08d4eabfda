"""Tables and plots for ``cohort-train`` and ``freeze-sweep``."""

from __future__ import annotations

from .common import console, fmt, pyplot, save_figure, sparkline


def render_cohort_train(res, path: str) -> None:
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
    c.print(f"mean PSNR {sum(res.psnr) / len(res.psnr):.2f} dB; trained in {res.seconds:.1f} s; saved {path}")
    for s in res.skipped:
        c.print(f"skipped (not an image): {s}")
    for s in res.resized:
        c.print(f"converted: {s}")


def render_sweep(rep) -> None:
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


def plot_sweep(rep, path: str, force: bool = False) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sweep = [r for r in rep.rows if r.k is not None]
    ks = [r.k for r in sweep]
    final = rep.steps
    ax.errorbar(ks, [r.mean(final) for r in sweep], yerr=[r.std(final) for r in sweep], marker="o", capsize=3,
                label=f"PSNR after {final} steps")  # fmt: skip
    scratch = next(r for r in rep.rows if r.k is None)
    ax.axhline(scratch.mean(final), color="grey", ls="--", lw=0.8, label="from scratch")
    ax.set_xlabel("frozen linear layers k")
    ax.set_xticks(ks)
    ax.set_ylabel("PSNR (dB)")
    ax2 = ax.twinx()
    ax2.plot([j + 1 for j in range(len(rep.stable_ranks))], rep.stable_ranks, color="tab:red", marker="s", lw=1,
             label="weight stable rank of layer k-1")  # fmt: skip
    ax2.set_ylabel("weight stable rank", color="tab:red")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    ax.set_title(f"freeze sweep ({rep.recipe.backbone}): k*={rep.recommended_freeze_depth}, best={rep.measured_best_k}")
    save_figure(fig, path, force)
    plt.close(fig)
