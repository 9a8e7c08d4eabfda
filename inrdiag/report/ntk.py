"""Tables and the eigenvalue-decay plot of ``inrdiag ntk``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import CYCLE, INLET_COLOR, console, fmt, pyplot, save_figure, say

if TYPE_CHECKING:
    from ..ntk.analysis import NTKAnalysis
    from ..ntk.kernel import NTKReport
    from ..ntk.target import TargetNTK


def render_analysis(result: NTKAnalysis) -> None:
    """``inrdiag ntk``'s tables: the report, then the target part when there is one."""
    render_ntk(result.report)
    if result.target is not None:
        render_target(result.target)


def render_ntk(rep: NTKReport) -> None:
    from rich.table import Table

    c = console()
    where = f"{rep.points:,} random points (seed {rep.seed}) of a" if rep.subset else f"N={rep.points:,} points, a"
    c.print(f"[bold]empirical NTK[/bold] on {where} {'x'.join(map(str, rep.grid_shape))} grid in "
            f"[-1,1]^{len(rep.grid_shape)}")  # fmt: skip
    c.print(f"  method {rep.method}, {rep.dtype}, {rep.device}; trace {fmt(rep.trace, 5)}")
    say(c, "Theta = sum over output channels of J_c J_c^T (a sum, not a mean)", 4, "  ")
    ev = rep.eigenvalues
    say(c, "  ".join(f"{v:.4g}" for v in ev[:8]), 4, "  top eigenvalues   ")
    d10, d100 = rep.decay.get("10"), rep.decay.get("100")
    c.print(f"  decay             lambda_10/lambda_1 {fmt(d10)}   lambda_100/lambda_1 {fmt(d100)}")
    kk = min(rep.top_k, len(ev))
    c.print(f"  condition number  lambda_1/lambda_{kk} {fmt(rep.condition_number_top_k, 4)} (top-{kk} block)")
    eff = "-" if rep.effective_rank is None else f"{rep.effective_rank:.2f}"
    if rep.effective_rank_bounds is not None:
        lo, hi = rep.effective_rank_bounds
        eff += f" (in [{lo:.3f}, {hi:.3f}])"
    nr = "-" if rep.numerical_rank is None else str(rep.numerical_rank)
    c.print(f"  effective rank {eff}   numerical rank {nr} (eigenvalues > {rep.tol:g} lambda_1)")
    acc = rep.accuracy
    if rep.precision:
        c.print(f"  precision (--dtype {rep.dtype_requested}): {rep.precision}")
    if "max_relative_residual" in acc:
        say(c, f"{acc['solver']}; {acc['products']} products; max ||Theta u - theta u|| / theta "
               f"= {acc['max_relative_residual']:.1e} (tol {acc['tol']:g}); with the compression bound every "
               f"returned eigenvalue is within {acc['max_relative_error_bound']:.1e} (relative)", 4, "  accuracy: ")  # fmt: skip
    else:
        say(c, f"{acc['solver']}; {acc['bound']}", 4, "  accuracy: ")
        if "kernels" in acc:
            say(c, f"{acc['kernels']}", 4, "  kernels: ")
    t = Table(title="layer-wise decomposition Theta = sum_g Theta_g", title_justify="left")
    for col in ("#", "group", "role", "params", "trace\nshare", "top\neig.", "num.\nrank", "eff.\nrank"):
        t.add_column(col, justify="left" if col in ("group", "role") else "right", no_wrap=True)
    for g, role in zip(rep.groups, group_roles(rep)):
        name = g.name if g.kind == "linear" else f"{g.name} ({g.kind})"
        t.add_row(
            str(g.index), name, role, f"{g.parameters:,}", share(g.trace_share),
            "-" if g.top_eigenvalue is None else f"{g.top_eigenvalue:.4g}",
            "-" if g.numerical_rank is None else f"{g.numerical_rank}/{g.max_rank}",
            "-" if g.effective_rank is None else f"{g.effective_rank:.1f}",
        )  # fmt: skip
    c.print(t)
    say(c, "ranks of an N x N kernel: numerical = #eigenvalues > tol * its lambda_1; effective = exp(entropy of "
           "lambda/sum lambda); out of min(N, p), p = rank bound of the group", 2)  # fmt: skip
    for note in rep.notes:
        say(c, note, 6, "note: ")


def share(x: float) -> str:
    """A trace share as a percentage that never reads 0% for a non-zero share (0.1%, 0.02%, <0.01%)."""
    if x <= 0:
        return "0%"
    if x >= 0.1:
        return f"{x:.0%}" if x >= 0.995 else f"{x:.1%}"
    if x >= 0.001:
        return f"{x:.1%}"
    if x >= 1e-4:
        return f"{x:.2%}"
    return "<0.01%"


def group_roles(rep: NTKReport) -> list[str]:
    """inlet / hidden / head for linear groups (by order among the linear groups), the kind otherwise."""
    linear = [i for i, g in enumerate(rep.groups) if g.kind == "linear"]
    roles = []
    for i, g in enumerate(rep.groups):
        if g.kind != "linear":
            roles.append(g.kind)
        elif i == linear[0]:
            roles.append("inlet")
        elif i == linear[-1]:
            roles.append("head")
        else:
            roles.append("hidden")
    return roles


def render_target(res: TargetNTK) -> None:
    c = console()
    c.print("[bold]target[/bold]: fraction of ||y||^2 in the span of the top-k eigenvectors of Theta")
    say(c, "   ".join(f"k={a.k}: {a.fraction:.4f}" for a in res.alignment), 2, "  ")
    c.print(f"  plain GD, step size {res.lr:.3g}, loss (1/2N) sum (f - y)^2: PSNR (dB) by step")
    rows = [("step", [str(t) for t in res.steps]), ("predicted", [f"{v:.2f}" for v in res.predicted_psnr])]
    if res.measured_psnr is not None:
        rows.append(("measured", [f"{v:.2f}" for v in res.measured_psnr]))
    per = max(1, (c.width - 13) // 8)  # values per line so that no row wraps
    for s in range(0, len(res.steps), per):
        for name, vals in rows:
            c.print(f"  {name:>9}  " + " ".join(f"{v:>7}" for v in vals[s : s + per]))
    for note in res.notes:
        say(c, note, 6, "note: ")


def plot_ntk(rep: NTKReport, path: str, force: bool = False, target: TargetNTK | None = None) -> None:
    """Eigenvalue decay of Theta and of every Theta_g (log-log, legend with roles and trace shares); with a
    target, the kernel-target alignment against k and the PSNR of plain GD against step (0 at 0: symlog)."""
    plt = pyplot()
    if target is not None:
        fig, (ax, cx, bx) = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    else:
        fig, ax = plt.subplots(figsize=(7, 4.4))
    ev = [v for v in rep.eigenvalues if v > 0]
    ax.loglog(range(1, len(ev) + 1), ev, color="black", lw=2.2, label=f"Theta, all layers ({rep.method})")
    k = 0
    for g, role in zip(rep.groups, group_roles(rep)):
        inlet = role == "inlet"
        color = INLET_COLOR if inlet else CYCLE[k % len(CYCLE)]
        k += 0 if inlet else 1
        label = f"{role} ({g.name}): {share(g.trace_share)} of trace"
        if g.eigenvalues:
            gv = [v for v in g.eigenvalues if v > 0]
            ax.loglog(range(1, len(gv) + 1), gv, color=color, lw=2 if inlet else 1.1, label=label)
        elif g.top_eigenvalue:
            ax.plot([1], [g.top_eigenvalue], "o", color=color, label=f"{label} (top eigenvalue only)")
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue lambda_i")
    ax.set_title(f"NTK spectra, {rep.points:,} points of a {'x'.join(map(str, rep.grid_shape))} grid")
    ax.legend(loc="lower left")
    if target is not None:
        ks = [a.k for a in target.alignment]
        cx.semilogx(ks, [a.fraction for a in target.alignment], "o-", color=CYCLE[0])
        cx.set_ylim(0, 1.02)
        cx.set_xlabel("k (top eigenvectors of Theta)")
        cx.set_ylabel("fraction of ||y||^2 in their span")
        cx.set_title("kernel-target alignment")
        bx.plot(target.steps, target.predicted_psnr, "o-", color=CYCLE[0], ms=4, label="predicted (linearised)")
        if target.measured_psnr is not None:
            bx.plot(target.steps, target.measured_psnr, "s--", color=CYCLE[1], ms=4, label="measured")
        bx.set_xscale("symlog", linthresh=1)
        bx.set_xlim(left=0)
        bx.set_xlabel("step t (symlog: 0 at 0)")
        bx.set_ylabel("PSNR (dB)")
        bx.set_title(f"plain gradient descent, step size {target.lr:.3g}")
        bx.legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, force)
    plt.close(fig)
