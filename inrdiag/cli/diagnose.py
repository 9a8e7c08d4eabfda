"""``inrdiag info``, ``inrdiag rank``, ``inrdiag check``."""

from __future__ import annotations

from typing import Annotated

import typer

from ..constants import DEFAULT_TOL
from .app import (
    DeviceOpt,
    ForceOpt,
    GridOpt,
    JsonOpt,
    ModelArg,
    PlotOpt,
    TolOpt,
    app,
    check_outputs,
    load_model,
    show,
)  # fmt: skip
from .app import Loading, with_loading, wrote


@app.command()
@with_loading
def info(
    model: ModelArg,
    loading: Loading | None = None,
    json: JsonOpt = False,
) -> None:
    """What was loaded and how: format, layout, layers, activation, encoding, unused tensors."""
    loaded = load_model(model, loading)
    from ..report.diagnose import render_info
    from ..report.usercode import render_user_info

    show(json, loaded.to_dict(), render_user_info if hasattr(loaded, "code") else render_info, loaded)


@app.command()
@with_loading
def rank(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Checkpoint(s): .safetensors/.pt/.pth/.ckpt files, or folders of them (natural order: "
            "step_900 before step_1000). Several give one table with a row per checkpoint.",
            show_default=False,
        ),
    ],
    grid: GridOpt = None,
    tol: TolOpt = DEFAULT_TOL,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
    plot: PlotOpt = None,
    csv: Annotated[
        str | None,
        typer.Option(
            "--csv", help="Write one row per (checkpoint, linear layer) to this CSV file.", show_default=False
        ),
    ] = None,
    force: ForceOpt = False,
    loading: Loading | None = None,
) -> None:
    """Weight stable ranks, representation spectra of every hidden layer, recommended freeze depth."""
    from ..models.adapter import as_adapter
    from ..errors import InrdiagError
    from ..signals.kinds import grid_from_provenance
    from ..spectra import rank_report
    from ..tables import expand_checkpoints, rank_rows, write_csv

    paths = expand_checkpoints(models)
    if plot and len(paths) > 1:
        raise InrdiagError(f"--plot draws one checkpoint; {len(paths)} were given (use --csv to compare them)")
    check_outputs(force, paths, **{"--plot": plot, "--csv": csv})
    reports = []
    for path in paths:
        loaded = load_model(path, loading)
        ad = as_adapter(loaded)  # built once: its d picks the grid, and the report runs on it
        shape = grid if grid is not None else grid_from_provenance(getattr(loaded, "provenance", None), ad.in_features)
        reports.append(rank_report(ad, grid=shape, tol=tol, device=device))
    rows = [row for path, rep in zip(paths, reports) for row in rank_rows(rep, path)]
    if csv:
        write_csv(rows, csv, force)
    if plot:
        from ..report.diagnose import plot_rank

        plot_rank(reports[0], plot, force)
    if len(paths) == 1:
        from ..report.diagnose import render_rank

        show(json, reports[0].to_dict(), render_rank, reports[0])
    else:
        data = {"checkpoints": [{"checkpoint": p, **r.to_dict()} for p, r in zip(paths, reports)]}
        from ..report.tables import render_rank_table

        show(json, data, render_rank_table, paths, reports)
    wrote(json, "plot", plot)
    wrote(json, "CSV", csv)


@app.command()
@with_loading
def check(
    model: ModelArg,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="TOML/JSON file of thresholds (pyproject.toml: [tool.inrdiag.check]); flags override it. "
            "Default: [tool.inrdiag.check] of the nearest pyproject.toml (working folder upward), if any.",
            show_default=False,
        ),
    ] = None,
    min_inlet_effective_rank_fraction: Annotated[
        float | None,
        typer.Option(
            "--min-inlet-effective-rank-fraction",
            help="Fail if the inlet's effective rank / min(N, width) is below this.",
            show_default=False,
        ),
    ] = None,
    min_inlet_numerical_rank_fraction: Annotated[
        float | None,
        typer.Option(
            "--min-inlet-numerical-rank-fraction",
            help="Fail if the inlet's numerical rank / min(N, width) is below this.",
            show_default=False,
        ),
    ] = None,
    min_weight_stable_rank: Annotated[
        float | None,
        typer.Option(
            "--min-weight-stable-rank",
            help="Fail if any hidden-to-hidden weight has a lower stable rank.",
            show_default=False,
        ),
    ] = None,
    max_dead_fraction: Annotated[
        float | None,
        typer.Option(
            "--max-dead-fraction",
            help="Fail if any hidden layer has more dead (never active) units than this fraction.",
            show_default=False,
        ),
    ] = None,
    allow_nonfinite: Annotated[
        bool | None,
        typer.Option(
            "--allow-nonfinite/--no-allow-nonfinite",
            help="Do not fail on NaN/Inf weights (default: fail).",
            show_default=False,
        ),
    ] = None,
    grid: GridOpt = None,
    tol: Annotated[
        float | None,
        typer.Option("--tol", help=f"Numerical-rank tolerance (default {DEFAULT_TOL:g}).", show_default=False),
    ] = None,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
    loading: Loading | None = None,
) -> None:
    """CI gate: exit 0 when every threshold passes, 1 when any fails, 2 on bad input."""
    from ..checks import default_policy, read_policy, run_checks

    base = read_policy(policy) if policy else default_policy()
    pol = base.merged(
        min_inlet_effective_rank_fraction=min_inlet_effective_rank_fraction,
        min_inlet_numerical_rank_fraction=min_inlet_numerical_rank_fraction,
        min_weight_stable_rank=min_weight_stable_rank, max_dead_fraction=max_dead_fraction,
        allow_nonfinite=allow_nonfinite, grid=grid, tol=tol,
    )  # fmt: skip
    loaded = load_model(model, loading)
    rep = run_checks(loaded, pol, device=device)
    rep.notes.insert(0, f"policy file: {pol.source}" if pol.source else "policy file: none (flags and defaults only)")
    from ..report.diagnose import render_check

    show(json, rep.to_dict(), render_check, rep)
    raise typer.Exit(rep.exit_code)
