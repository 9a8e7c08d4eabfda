"""``inrdiag cohort-train`` and ``inrdiag freeze-sweep``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..cohort.recipe import DEFAULT_BACKBONE, DEFAULT_DEPTH, DEFAULT_HOLDOUT, DEFAULT_LR, DEFAULT_SIZE  # torch-free
from ..cohort.recipe import DEFAULT_STEPS, DEFAULT_SWEEP_STEPS, DEFAULT_WIDTH
from .app import DeviceOpt, ForceOpt, JsonOpt, PlotOpt, app, check_outputs, progress_bar, seed_param, show
from .study import FromOpt, JobsOpt, MaxJobsOpt, OutDirOpt

RECIPE = "Cohort recipe"
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        help=f"siren (sine, w0=30) or ff (Fourier features + ReLU). (default: {DEFAULT_BACKBONE})",
        rich_help_panel=RECIPE,
        show_default=False,
    ),
]
DepthOpt = Annotated[
    int | None,
    typer.Option(
        "--depth",
        help=f"Hidden layers (the network has depth+1 linear layers). (default: {DEFAULT_DEPTH})",
        rich_help_panel=RECIPE,
        show_default=False,
    ),
]
WidthOpt = Annotated[
    int | None,
    typer.Option(
        "--width",
        help=f"Units per hidden layer. (default: {DEFAULT_WIDTH})",
        rich_help_panel=RECIPE,
        show_default=False,
    ),
]
SharedOpt = Annotated[
    int | None,
    typer.Option(
        "--shared-layers",
        "-K",
        help="K: linear layers in the shared encoder (1..depth). (default: depth)",
        rich_help_panel=RECIPE,
        show_default=False,
    ),
]
SizeOpt = Annotated[
    int | None,
    typer.Option(
        "--size",
        help=f"Images are resized to size x size. (default: {DEFAULT_SIZE})",
        rich_help_panel=RECIPE,
        show_default=False,
    ),
]
SeedOpt = Annotated[int, seed_param("Seed of initialisation and of the held-out split.")]


def _lr_help() -> str:
    return ", ".join(f"{v:g} {k}" for k, v in DEFAULT_LR.items())


def _bar_callback(bar: Any, task: Any) -> Callable[[int, int, float, float], None]:
    """An ``inrdiag.progress.Progress`` (step, total, loss, metric) drawing onto ``bar``'s ``task`` (rich)."""

    def cb(step: int, total: int, loss: float, metric: float) -> None:
        info = f"loss {loss:.2e}" if math.isnan(metric) else f"loss {loss:.2e}  PSNR {metric:.2f} dB"
        bar.update(task, completed=step, total=total, info=info)

    return cb


@app.command("cohort-train")
def cohort_train(
    folder: Annotated[str, typer.Argument(help="Folder of images (the cohort).", show_default=False)],
    out: Annotated[
        str, typer.Option("-o", "--out", help="Output cohort checkpoint (.safetensors).", show_default=False)
    ],
    backbone: BackboneOpt = None,
    depth: DepthOpt = None,
    width: WidthOpt = None,
    shared_layers: SharedOpt = None,
    size: SizeOpt = None,
    steps: Annotated[int, typer.Option("--steps", help="Joint training steps (full batch).")] = DEFAULT_STEPS,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help=f"Adam learning rate. (default: {_lr_help()})", show_default=False),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Fit one shared encoder (the first K linear layers) and one head per image, jointly."""
    from pathlib import Path

    from ..cohort.folders import resolve_recipe, train_folder
    from ..cohort.train import save_cohort
    from ..files import check_writable
    from .study import is_rank0

    check_writable(out, force)
    recipe = resolve_recipe(backbone=backbone, depth=depth, width=width, shared_layers=shared_layers, size=size,
                            steps=steps, lr=lr, seed=seed)  # fmt: skip
    with progress_bar(disable=json or not is_rank0()) as bar:
        task = bar.add_task("cohort training", total=recipe.steps, info="")
        res = train_folder(folder, recipe, device=device, progress=_bar_callback(bar, task))
    if res is None:  # a rank other than 0 under torchrun
        return
    prov = {"psnr_mean": res.psnr_mean, "folder": str(Path(folder).resolve())}
    save_cohort(res.models, recipe, res.names, out, provenance=prov, force=force)
    from ..report.cohort import render_cohort_train

    show(json, {**res.to_dict(), "out": out}, render_cohort_train, res, out)


@app.command("freeze-sweep")
def freeze_sweep_cmd(
    folder: Annotated[
        str | None,
        typer.Argument(help="Folder of images (and optionally one cohort checkpoint).", show_default=False),
    ] = None,
    test: Annotated[
        str | None,
        typer.Option(
            "--test", help="Folder of held-out images (default: a seeded split of FOLDER).", show_default=False
        ),
    ] = None,
    cohort: Annotated[
        str | None,
        typer.Option(
            "--cohort",
            help="Cohort checkpoint (default: the one .safetensors in FOLDER, else train one).",
            show_default=False,
        ),
    ] = None,
    holdout: Annotated[
        int, typer.Option("--holdout", help="Without --test: images held out of FOLDER (seeded).")
    ] = DEFAULT_HOLDOUT,
    splits: Annotated[
        int, typer.Option("--splits", help="Held-out splits of FOLDER (split i drawn with seed + i); one cohort each.")
    ] = 1,
    seeds: Annotated[
        int, typer.Option("--seeds", help="Seeds per split (cohort init and sweep fits: seed, seed+1, ...).")
    ] = 1,
    steps: Annotated[
        int, typer.Option("--steps", help="Fitting steps per held-out image and freeze depth.")
    ] = DEFAULT_SWEEP_STEPS,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Adam learning rate of the sweep fits. (default: the recipe's)", show_default=False),
    ] = None,
    cohort_steps: Annotated[
        int | None,
        typer.Option(
            "--cohort-steps",
            help=f"Joint training steps when a cohort is trained first. (default: {DEFAULT_STEPS})",
            show_default=False,
        ),
    ] = None,
    backbone: BackboneOpt = None,
    depth: DepthOpt = None,
    width: WidthOpt = None,
    shared_layers: SharedOpt = None,
    size: SizeOpt = None,
    save: Annotated[
        str | None,
        typer.Option(
            "-o", "--save", help="Save the cohort trained here to this file (one sweep only).", show_default=False
        ),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="CPU threads per process (default: all, or cores/N with --jobs N).", show_default=False
        ),
    ] = None,
    out: OutDirOpt = None,
    from_: FromOpt = None,
    jobs: JobsOpt = 1,
    max_jobs: MaxJobsOpt = None,
    json: JsonOpt = False,
    plot: PlotOpt = None,
    force: ForceOpt = False,
) -> None:
    """Fit held-out images from the shared encoder with k = 0..K layers frozen; compare with k*.
    With --splits/--seeds: paired statistics of k* against full fine-tuning and the best k (docs/studies.md)."""
    from ..cohort.folders import sweep_folder
    from ..cohort.recipe import CohortError
    from ..study import api

    check_outputs(force, (), **{"-o": save, "--plot": plot})
    if from_ is not None:
        if folder is not None:
            raise CohortError("give either FOLDER (to run) or --from RUN_DIR (to report), not both")
        kind, rep = api.load_study(from_)
        if kind != "freeze-sweep":
            raise CohortError(f"{from_} holds a {kind} study; report it with `inrdiag {kind} --from {from_}`")
        _show_sweep(rep, plot, json, force)
        return
    if folder is None:
        raise CohortError("give FOLDER (images) or --from RUN_DIR")
    from .study import job_progress, show_pending

    flags = {"backbone": backbone, "depth": depth, "width": width, "shared_layers": shared_layers, "size": size,
             "steps": cohort_steps}  # fmt: skip
    kw: dict[str, Any] = {"test": test, "cohort": cohort, "holdout": holdout, "splits": splits, "seeds": seeds, "steps": steps,
          "lr": lr, "recipe": flags, "seed": seed, "force": force, "out": out, "device": device, "threads": threads,
          "workers": jobs, "max_jobs": max_jobs}  # fmt: skip
    if save:  # one sweep in this process, its freshly trained cohort kept
        with progress_bar(disable=json) as bar:
            train = bar.add_task("cohort training", total=None, info="")
            fits = bar.add_task("freeze sweep", total=None, info="")
            run = sweep_folder(folder, save=save, train_progress=_bar_callback(bar, train),
                               progress=_bar_callback(bar, fits), **kw)  # fmt: skip
    else:
        with job_progress(not json) as (on_job, _):
            run = sweep_folder(folder, job_progress=on_job, **kw)
    if not run.main:
        return
    if run.report is None:
        show_pending(json, run.outcome)
        return
    _show_sweep(run.report, plot, json, force)


def _show_sweep(rep: Any, plot: str | None, json: bool, force: bool) -> None:
    """Render a SweepReport (one sweep) or a FreezeStudy."""
    from ..cohort.freeze import SweepReport

    if isinstance(rep, SweepReport):
        if plot:
            from ..report.cohort import plot_sweep

            plot_sweep(rep, plot, force)
        from ..report.cohort import render_sweep

        show(json, rep.to_dict(), render_sweep, rep)
        return
    from ..report import study as R

    saved = {}
    if plot:
        R.plot_freeze_study(rep, plot, force)
        saved["plot"] = plot
    from ..report.study import render_freeze_study

    show(json, {**rep.to_dict(), "outputs": saved}, render_freeze_study, rep, saved)
