"""Tables and the eigenvalue-decay plot of ``inrdiag ntk``."""

from __future__ import annotations

from .common import console, fmt, pyplot, save_figure


def render_ntk(rep) -> None:
    from rich.table import Table

    c = console()
    where = f"{rep.points:,} random points (seed {rep.seed}) of a" if rep.subset else f"N={rep.points:,} points, a"
    c.print(f"[bold]empirical NTK[/bold] on {where} {'x'.join(map(str, rep.grid_shape))} grid in "
            f"[-1,1]^{len(rep.grid_shape)}; method {rep.method}, {rep.dtype}, {rep.device}")  # fmt: skip
    ev = rep.eigenvalues
    c.print(f"  Theta = sum over output channels of J_c J_c^T (a sum, not a mean); trace {fmt(rep.trace, 5)}")
    c.print("  top eigenvalues  " + "  ".join(fmt(v, 4) for v in ev[:8]))
    d10, d100 = rep.decay.get("10"), rep.decay.get("100")
    c.print(f"  decay            lambda_10/lambda_1 {fmt(d10)}   lambda_100/lambda_1 {fmt(d100)}")
    kk = min(rep.top_k, len(ev))
    c.print(f"  condition number of the top-{kk} block (lambda_1/lambda_{kk})  {fmt(rep.condition_number_top_k, 4)}")
    eff = "-" if rep.effective_rank is None else f"{rep.effective_rank:.2f}"
    nr = "-" if rep.numerical_rank is None else str(rep.numerical_rank)
    c.print(f"  effective rank {eff}   numerical rank {nr} (eigenvalues > {rep.tol:g} lambda_1)")
    acc = rep.accuracy
    if rep.precision:
        c.print(f"  precision (--dtype {rep.dtype_requested}): {rep.precision}")
    if "max_relative_residual" in acc:
        c.print(f"  accuracy: {acc['solver']}; {acc['products']} products; max ||Theta u - theta u|| / theta "
                f"= {acc['max_relative_residual']:.1e} (tol {acc['tol']:g}); with the compression bound every "
                f"returned eigenvalue is within {acc['max_relative_error_bound']:.1e} (relative)")  # fmt: skip
    else:
        c.print(f"  accuracy: {acc['solver']}; {acc['bound']}")
        if "kernels" in acc:
            c.print(f"  kernels: {acc['kernels']}")
    t = Table(title="layer-wise decomposition Theta = sum_g Theta_g", title_justify="left")
    for col in ("#", "group", "params", "trace share", "top eig.", "num. rank", "eff. rank"):
        t.add_column(col, justify="left" if col == "group" else "right", no_wrap=True)
    for g in rep.groups:
        name = g.name if g.kind == "linear" else f"{g.name} ({g.kind})"
        t.add_row(
            str(g.index), name, f"{g.parameters:,}", f"{g.trace_share:.1%}",
            "-" if g.top_eigenvalue is None else f"{g.top_eigenvalue:.4g}",
            "-" if g.numerical_rank is None else f"{g.numerical_rank}/{g.max_rank}",
            "-" if g.effective_rank is None else f"{g.effective_rank:.1f}",
        )  # fmt: skip
    c.print(t)
    c.print("[dim]ranks of an N x N kernel: numerical = #eigenvalues > tol * its lambda_1; effective = "
            "exp(entropy of lambda/sum lambda); out of min(N, p), p = rank bound of the group[/dim]")  # fmt: skip
    for note in rep.notes:
        c.print(f"note: {note}")


def render_target(res) -> None:
    c = console()
    c.print("[bold]target[/bold]: fraction of ||y||^2 in the span of the top-k eigenvectors of Theta")
    c.print("  " + "   ".join(f"k={k}: {f:.4f}" for k, f in res.alignment))
    c.print(f"  plain GD, lr {res.lr:g}, loss (1/2N) sum (f - y)^2: PSNR (dB) by step")
    rows = [("step", [str(t) for t in res.steps]), ("predicted", [fmt(v) for v in res.predicted_psnr])]
    if res.measured_psnr is not None:
        rows.append(("measured", [fmt(v) for v in res.measured_psnr]))
    for name, vals in rows:
        c.print(f"  {name:>9}  " + " ".join(f"{v:>7}" for v in vals))
    for note in res.notes:
        c.print(f"note: {note}")


def plot_ntk(rep, path: str, force: bool = False, target=None) -> None:
    """Eigenvalue decay of Theta and of every Theta_g (log scale); with a target, the PSNR curves too."""
    plt = pyplot()
    if target is not None:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
        steps = [max(t, 1) for t in target.steps]
        ax2.semilogx(steps, target.predicted_psnr, "o-", label="predicted (linearised plain GD)")
        if target.measured_psnr is not None:
            ax2.semilogx(steps, target.measured_psnr, "s--", label="measured (plain GD)")
        ax2.set_xlabel("step t (0 drawn at 1)")
        ax2.set_ylabel("PSNR (dB)")
        ax2.set_title(f"fit by plain gradient descent, lr {target.lr:g}")
        ax2.legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(6.8, 4.4))
    ev = [v for v in rep.eigenvalues if v > 0]
    ax.loglog(range(1, len(ev) + 1), ev, color="black", lw=2, label=f"Theta ({rep.method})")
    for g in rep.groups:
        if g.eigenvalues:
            gv = [v for v in g.eigenvalues if v > 0]
            ax.loglog(range(1, len(gv) + 1), gv, lw=1, label=f"{g.name} ({g.trace_share:.0%} of trace)")
        elif g.top_eigenvalue:
            ax.plot([1], [g.top_eigenvalue], "o", label=f"{g.name} (top only, {g.trace_share:.0%})")
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue lambda_i")
    ax.set_title(f"NTK spectra, {rep.points:,} points of a {'x'.join(map(str, rep.grid_shape))} grid")
    ax.legend(fontsize=7)
    save_figure(fig, path, force)
    plt.close(fig)
