"""``inrdiag ntk``: the empirical NTK spectrum and its layer-wise decomposition."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import DeviceOpt, ForceOpt, JsonOpt, ModelArg, PlotOpt, app, check_outputs, load_model  # fmt: skip
from .app import Loading, seed_param, with_loading, wrote

SeedOpt = Annotated[int, seed_param("Seed of --points and of the Lanczos start block.")]


@app.command()
@with_loading
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
    seed: SeedOpt = 0,
    top_k: Annotated[int, typer.Option("--top-k", help="Eigenpairs to compute / report (all in exact mode).")] = 32,
    method: Annotated[
        str,
        typer.Option("--method", help="auto (exact when N <= 8192 and the N x N matrices fit) | exact | lanczos."),
    ] = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="auto (float32 products, float64 bases, accuracy checked; said in the output) | float32 "
            "(float32 products, float64 eigensolves) | float64 (everything float64: the reference).",
        ),
    ] = "auto",
    tol: Annotated[float, typer.Option("--tol", help="Numerical rank counts eigenvalues above tol * lambda_1.")] = 1e-3,
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
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
    plot: PlotOpt = None,
    force: ForceOpt = False,
    loading: Loading | None = None,
) -> None:
    """Empirical NTK Theta = sum_c J_c J_c^T (SUM over output channels, not a mean) on a grid: spectrum,
    decay, effective rank, and the exact layer-wise split Theta = sum_g Theta_g (batch norm in eval mode)."""
    from ..device import tune_malloc
    from ..ntk.kernel import ntk_report

    from ..errors import InrdiagError

    if not target and (fit_steps or lr is not None):
        given = "--fit-steps" if fit_steps else "--lr"
        raise InrdiagError(f"{given} applies to the plain-GD fit of a target; give --target IMAGE too")
    tune_malloc()  # the command's N x N buffers are reused instead of returned to the OS and page-faulted back

    check_outputs(force, [model, target], **{"--plot": plot})
    from ..models.adapter import as_adapter

    loaded = load_model(model, loading)
    ad = as_adapter(loaded)
    tgt = None
    if target:
        from ..grid import default_points
        from ..ntk.kernel import DEFAULT_GRID
        from ..fitting.targets import fit_to_model, load_target

        n_axis = grid or DEFAULT_GRID.get(ad.in_features, default_points(ad.in_features))
        tgt = load_target(target, size=n_axis)
        channel_note = fit_to_model(tgt, ad.in_features, ad.out_features)
    rep = ntk_report(ad, grid=grid, points=points, seed=seed, top_k=top_k, method=method, dtype=dtype,
                     device=device, tol=tol, vectors=tgt is not None)  # fmt: skip
    tres = None
    if tgt is not None:
        from ..ntk.target import target_ntk

        y = tgt.values if rep.indices is None else tgt.values[rep.indices]
        if lr is None and not rep.eigenvalues[0] > 0:
            raise InrdiagError(f"{model}: the NTK is zero on the grid (lambda_1 = {rep.eigenvalues[0]:g}: no output moves "
                               "with any parameter, e.g. all weights zero), so there is no default step; give --lr")  # fmt: skip
        lr = lr if lr is not None else rep.points * y.shape[1] / rep.eigenvalues[0]
        tres = target_ntk(rep, ad, y, lr=lr, steps=fit_steps, fit=fit_steps > 0)
        tres.notes.extend(tgt.notes)
        if channel_note:
            tres.notes.append(channel_note)
        if tgt.kind == "occupancy":
            tres.notes.append("occupancy target: PSNR here is of the MSE on 0/1 values (fit and compare report IoU)")
    if plot:
        from ..report.ntk import plot_ntk

        plot_ntk(rep, plot, force, tres)
    if json:
        from ..report.common import emit_json

        data = rep.to_dict()
        data["target"] = None if tres is None else {"path": target, **tres.to_dict()}
        emit_json(data)
    else:
        from ..report.ntk import render_ntk, render_target

        render_ntk(rep)
        if tres is not None:
            render_target(tres)
    wrote(json, "plot", plot)
