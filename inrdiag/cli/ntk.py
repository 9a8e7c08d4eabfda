"""``inrdiag ntk``: the empirical NTK spectrum and its layer-wise decomposition.

Parses the flags into an ``NTKConfig``, calls ``inrdiag.ntk.analysis.run_ntk`` once, renders the result;
every default is the engine's (``inrdiag.ntk.config``, ``inrdiag.constants``)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..constants import DEFAULT_TOL
from ..ntk.config import DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_GRID, DEFAULT_METHOD, DEFAULT_TOP_K, EXACT_MAX_POINTS
from .app import DeviceOpt, ForceOpt, JsonOpt, ModelArg, PlotOpt, app, check_outputs, load_model, show  # fmt: skip
from .app import Loading, seed_param, with_loading, wrote

SeedOpt = Annotated[int, seed_param("Seed of --points and of the Krylov/Lanczos start blocks.")]

_N = DEFAULT_GRID[2] ** 2


@app.command()
@with_loading
def ntk(
    model: ModelArg,
    grid: Annotated[
        int | None,
        typer.Option(
            "--grid",
            help=f"Grid points per axis in [-1,1] (default {DEFAULT_GRID[2]} in 2-D, {DEFAULT_GRID[3]} in 3-D: "
            f"N = {_N}).",
            show_default=False,
        ),
    ] = None,
    points: Annotated[
        int | None,
        typer.Option(
            "--points", help="Use N random points of the grid instead (seeded by --seed).", show_default=False
        ),
    ] = None,
    seed: SeedOpt = 0,
    top_k: Annotated[
        int, typer.Option("--top-k", help="Eigenpairs to compute / report (all in exact mode with float64).")
    ] = DEFAULT_TOP_K,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help=f"auto (exact when N <= {EXACT_MAX_POINTS} and the N x N matrices fit) | exact | lanczos.",
        ),
    ] = DEFAULT_METHOD,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="auto (float32 products, float64 bases, top of each spectrum by block Krylov; accuracy said "
            "in the output) | float32 (float32 products, float64 eigensolves) | float64 (everything float64, "
            "all eigenvalues: the reference).",
        ),
    ] = DEFAULT_DTYPE,
    tol: Annotated[
        float, typer.Option("--tol", help="Numerical rank counts eigenvalues above tol * lambda_1.")
    ] = DEFAULT_TOL,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Image or occupancy grid, resampled onto the grid: alignment and the "
            "residual curve linearised plain GD predicts.",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr", help="Plain GD step, loss (1/2N) sum (f-y)^2 (default N / lambda_1: stable).", show_default=False
        ),
    ] = None,
    fit_steps: Annotated[
        int, typer.Option("--fit-steps", help="Also fit the target by plain GD from this checkpoint for T steps.")
    ] = 0,
    device: DeviceOpt = DEFAULT_DEVICE,
    json: JsonOpt = False,
    plot: PlotOpt = None,
    force: ForceOpt = False,
    loading: Loading | None = None,
) -> None:
    """Empirical NTK Theta = sum_c J_c J_c^T (SUM over output channels, not a mean) on a grid: spectrum,
    decay, effective rank, and the exact layer-wise split Theta = sum_g Theta_g (batch norm in eval mode)."""
    from ..device import tune_malloc
    from ..ntk.analysis import run_ntk
    from ..ntk.config import NTKConfig
    from ..report.ntk import plot_ntk, render_analysis

    check_outputs(force, [model, target], **{"--plot": plot})
    tune_malloc()  # the command's N x N buffers are reused instead of returned to the OS and page-faulted back
    config = NTKConfig(grid=grid, points=points, seed=seed, top_k=top_k, method=method, dtype=dtype,
                       device=device, tol=tol)  # fmt: skip
    result = run_ntk(load_model(model, loading), config, target=target, lr=lr, fit_steps=fit_steps)
    if plot:
        plot_ntk(result.report, plot, force, result.target)
    show(json, result.to_dict(), render_analysis, result)
    wrote(json, "plot", plot)
