"""``inrdiag ntk``: the empirical NTK spectrum and its layer-wise decomposition."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import (ActivationOpt, DeviceOpt, EncodingOpt, ForceOpt, FrequenciesOpt, HeadOpt, JsonOpt, ModelArg,
                  PlotOpt, W0HiddenOpt, W0Opt, app, load_model)  # fmt: skip


@app.command()
def ntk(
    model: ModelArg,
    grid: Annotated[
        int | None,
        typer.Option(
            "--grid",
            help="Grid points per axis in [-1,1] (default 64 in 2-D, 16 in 3-D: N = 4096).",
            show_default=False,
        ),
    ] = None,
    points: Annotated[
        int | None,
        typer.Option(
            "--points", help="Use N random points of the grid instead (seeded by --seed).", show_default=False
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --points and of the Lanczos start block.")] = 0,
    top_k: Annotated[int, typer.Option("--top-k", help="Eigenpairs to compute / report (all in exact mode).")] = 32,
    method: Annotated[
        str,
        typer.Option("--method", help="auto (exact when N <= 8192 and the N x N matrices fit) | exact | lanczos."),
    ] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="float64 | float32 (products; eigvalsh runs in float64).")] = (
        "float64"
    ),
    tol: Annotated[float, typer.Option("--tol", help="Numerical rank counts eigenvalues above tol * lambda_1.")] = 1e-3,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
    plot: PlotOpt = None,
    force: ForceOpt = False,
    activation: ActivationOpt = None,
    w0: W0Opt = None,
    w0_hidden: W0HiddenOpt = None,
    encoding: EncodingOpt = None,
    frequencies: FrequenciesOpt = None,
    head: HeadOpt = None,
) -> None:
    """Empirical NTK Theta = sum_c J_c J_c^T (SUM over output channels, not a mean) on a grid: spectrum,
    decay, effective rank, and the exact layer-wise split Theta = sum_g Theta_g (batch norm in eval mode)."""
    from ..io import check_writable
    from ..ntk import ntk_report

    if plot:
        check_writable(plot, force)
    loaded = load_model(model, activation, w0, w0_hidden, encoding, frequencies, head)
    rep = ntk_report(loaded.model, grid=grid, points=points, seed=seed, top_k=top_k, method=method, dtype=dtype,
                     device=device, tol=tol, layer_names=loaded.layer_keys)  # fmt: skip
    if plot:
        from ..report.ntk import plot_ntk

        plot_ntk(rep, plot, force)
    if json:
        from ..report.common import emit_json

        emit_json(rep.to_dict())
    else:
        from ..report.ntk import render_ntk

        render_ntk(rep)
