"""``inrdiag fit``, ``inrdiag compare``, ``inrdiag reinit``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..fitting.defaults import DEFAULT_DEPTH, DEFAULT_INIT, DEFAULT_LR, DEFAULT_STEPS, DEFAULT_WIDTH  # torch-free
from ..fitting.defaults import DEFAULT_COMPARE_INITS, DEFAULT_SEEDS, FULL_BATCH_MAX, SAMPLED_BATCH
from .app import DeviceOpt, ForceOpt, JsonOpt, ModelArg, PlotOpt, app, check_outputs, load_model, show  # fmt: skip
from .app import Loading, ModelArgsOpt, ModelCodeOpt, progress_bar, seed_param, with_loading
from .study import CsvOpt, FromOpt, JobsOpt, MaxJobsOpt, OutDirOpt, job_progress, show_pending

if TYPE_CHECKING:
    from rich.progress import TaskID

TRAIN = "Training budget"

TargetArg = Annotated[
    str,
    typer.Argument(help="Image (png/jpg/tiff..., gray/RGB/RGBA, 8/16-bit), 3-D occupancy grid (.npy/.npz), mesh or "
                   "point cloud (.obj/.ply/.stl/.off/.xyz), audio (.wav/.flac/.ogg) or video (.mp4/.gif/.npy T x H x W "
                   "(x C)/folder of frames); see docs/signals.md.", show_default=False),
]  # fmt: skip
KindOpt = Annotated[
    str,
    typer.Option("--target-kind", help="auto|image|occupancy|sdf|audio|video: sdf turns a mesh into a truncated "
                 "signed distance target; video reads a 3-D .npy or an animated .gif as frames."),
]  # fmt: skip
SecondsOpt = Annotated[
    float | None,
    typer.Option("--seconds", help="Audio: fit only the first SECONDS seconds.", show_default=False),
]
DepthOpt = Annotated[int, typer.Option("--depth", help="Hidden layers.", rich_help_panel=TRAIN)]
WidthOpt = Annotated[int, typer.Option("--width", help="Units per hidden layer.", rich_help_panel=TRAIN)]
StepsOpt = Annotated[int, typer.Option("--steps", help="Optimiser steps.", rich_help_panel=TRAIN)]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate (constant).", rich_help_panel=TRAIN)]
BatchOpt = Annotated[
    int | None,
    typer.Option("--batch-size", help=f"Points per step (default: full batch up to {FULL_BATCH_MAX:,} points, else "
                 f"{SAMPLED_BATCH:,} sampled).", rich_help_panel=TRAIN, show_default=False),
]  # fmt: skip
SeedOpt = Annotated[int, seed_param("Seed of the init and the batch sampling.")]
SizeOpt = Annotated[
    int | None,
    typer.Option(
        "--size",
        "--grid",
        help="Resample the target to SIZE points per axis first (meshes: the occupancy/SDF "
        "grid, default 64; audio: samples; video: every axis, time too).",
        show_default=False,
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="CPU threads (default: one per core; on a busy shared machine 1 can be "
                 "much faster).", rich_help_panel=TRAIN, show_default=False),
]  # fmt: skip
HoldoutOpt = Annotated[
    int,
    typer.Option("--holdout-stride", help="Fit only grid points whose indices are multiples of this on every axis "
                 "and report the metric on the others too (2: every other pixel).", rich_help_panel=TRAIN),
]  # fmt: skip


@contextmanager
def _progress(enabled: bool, total_runs: int = 1) -> Iterator[Callable[[str, int, int, str], None] | None]:
    """A rich progress bar on stderr; yields ``update(label, step, steps, loss, metric_text)``."""
    if not enabled:
        yield None
        return
    with progress_bar() as bar:
        tasks: dict[str, TaskID] = {}

        def update(label: str, step: int, steps: int, info: str) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=steps, info="")
            bar.update(tasks[label], completed=step, info=info)

        yield update


def _info(metric_name: str, loss: float, metric: float) -> str:
    m = f"{metric:.2f} dB" if metric_name == "PSNR" else f"{metric:.4f}"
    return f"loss {loss:.3g}  {metric_name} {m}"


@app.command()
def fit(
    target: TargetArg,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help=f"default|rank-expand|siren|pe|ff|bn (see docs/inits.md); default {DEFAULT_INIT}. With "
            "--model-code: keep (default: the init your code gives) or default|rank-expand|siren for its inlet.",
            show_default=False,
        ),
    ] = None,
    depth: DepthOpt = DEFAULT_DEPTH,
    width: WidthOpt = DEFAULT_WIDTH,
    steps: StepsOpt = DEFAULT_STEPS,
    lr: LrOpt = DEFAULT_LR,
    batch_size: BatchOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    size: SizeOpt = None,
    target_kind: KindOpt = "auto",
    seconds: SecondsOpt = None,
    track_rank: Annotated[
        int,
        typer.Option(
            "--track-rank", help="Every N steps record each hidden layer's effective rank on the target grid (0: off)."
        ),
    ] = 0,
    holdout_stride: HoldoutOpt = 1,
    threads: ThreadsOpt = None,
    output: Annotated[
        str | None,
        typer.Option(
            "-o", "--output", help="Write the fitted model (.safetensors, with provenance).", show_default=False
        ),
    ] = None,
    recon: Annotated[
        str | None,
        typer.Option(
            "--recon",
            help="Write the reconstruction: PNG (volumes: slices), .obj/.ply/.stl/.off (marching "
            "cubes of occupancy/SDF), .wav (audio), .gif (video), .npy (raw).",
            show_default=False,
        ),
    ] = None,
    plot: PlotOpt = None,
    json: JsonOpt = False,
    force: ForceOpt = False,
    model_code: ModelCodeOpt = None,
    model_args: ModelArgsOpt = None,
) -> None:
    """Fit an MLP to an image (MSE, PSNR), occupancy grid or mesh (BCE, IoU at 0.5), SDF (clamped L1, IoU of f<0),
    audio or video (MSE, PSNR) from a chosen inlet init."""  # fmt: skip
    check_outputs(force, [target], **{"-o": output, "--recon": recon, "--plot": plot})
    from ..fitting.loop import FitConfig, provenance
    from ..fitting.loop import fit as run_fit
    from ..models.inits import get_scheme
    from ..fitting.targets import METRIC_NAME, load_target

    user = None
    if model_code is not None:  # the user's own class, built by their code (this runs it)
        from ..errors import InrdiagError
        from ..models.usercode import ModelCode, build_module

        code = ModelCode.parse(model_code, model_args)
        init = init or "keep"
        if init not in ("keep", "default", "rank-expand", "siren"):
            raise InrdiagError(f"--init {init} with --model-code: allowed keep, default, rank-expand, siren")
    elif model_args is not None:
        from ..errors import InrdiagError

        raise InrdiagError("--model-args applies only with --model-code FILE.py:Class")
    init = init or DEFAULT_INIT
    if model_code is None:
        get_scheme(init)
    cfg = FitConfig(init=init, depth=depth, width=width, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                    device=device, track_rank=track_rank, holdout_stride=holdout_stride, threads=threads)  # fmt: skip
    cfg.validate()
    tgt = load_target(target, size, kind=target_kind, seconds=seconds)
    if model_code is not None:
        user = build_module(code)
    if recon:
        from ..signals.recon import check_recon_suffix

        check_recon_suffix(tgt.kind, recon)
    name = METRIC_NAME[tgt.kind]
    with _progress(True) as update:
        cb = None if update is None else (lambda st, n, lo, m: update(f"fit {init}", st, n, _info(name, lo, m)))
        res = run_fit(tgt, cfg, cb, model=user)
    saved: dict[str, str] = {}
    if output and user is not None:  # a plain state dict in your module's key names (+ the code, provenance)
        from ..models.usercode import UserLoaded, save_user_state

        fitted = UserLoaded(model=res.model, path=str(output), code=code, file_format="", prefix="", tensors=[])
        save_user_state(fitted, output, provenance(res), force)
        saved["model"] = output
    elif output:
        from ..checkpoints.save import save

        save(res.model, output, provenance(res), force)
        saved["model"] = output
    if recon:
        from ..signals.recon import save_signal_reconstruction

        save_signal_reconstruction(res.model, tgt, recon, force)
        saved["reconstruction"] = recon
    if plot:
        from ..report.fit import plot_fit

        plot_fit(res, plot, force, tgt)
        saved["plot"] = plot
    from ..report.fit import render_fit

    show(json, {**res.to_dict(), "outputs": saved}, render_fit, res, saved)


@app.command()
def compare(
    target: Annotated[
        str | None,
        typer.Argument(
            help="An image or occupancy grid, or a FOLDER of them (a study with paired statistics).", show_default=False
        ),
    ] = None,
    inits: Annotated[str, typer.Option("--inits", help="Comma-separated inits to compare.")] = ",".join(
        DEFAULT_COMPARE_INITS
    ),
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per init (seed, seed+1, ...).")] = DEFAULT_SEEDS,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Folders: the init the others are paired against. (default: default, else the first)",
            show_default=False,
        ),
    ] = None,
    depth: DepthOpt = DEFAULT_DEPTH,
    width: WidthOpt = DEFAULT_WIDTH,
    steps: StepsOpt = DEFAULT_STEPS,
    lr: LrOpt = DEFAULT_LR,
    batch_size: BatchOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    size: SizeOpt = None,
    target_kind: KindOpt = "auto",
    seconds: SecondsOpt = None,
    holdout_stride: HoldoutOpt = 1,
    threads: ThreadsOpt = None,
    out: OutDirOpt = None,
    from_: FromOpt = None,
    jobs: JobsOpt = 1,
    max_jobs: MaxJobsOpt = None,
    plot: PlotOpt = None,
    csv: CsvOpt = None,
    json: JsonOpt = False,
    force: ForceOpt = False,
    model_code: ModelCodeOpt = None,
    model_args: ModelArgsOpt = None,
) -> None:
    """The same budget under several inits and seeds: metric mean ± std and inlet rank at init; on a folder,
    paired statistics against a baseline (docs/studies.md)."""  # fmt: skip
    from pathlib import Path

    from ..errors import InrdiagError
    from ..fitting.loop import FitConfig
    from ..models.inits import parse_schemes
    from ..study import api

    inputs = [] if target is None else ([str(q) for q in Path(target).iterdir()] if Path(target).is_dir() else [target])
    check_outputs(force, inputs, **{"--plot": plot, "--csv": csv})
    if from_ is not None:
        if target is not None:
            raise InrdiagError("give either TARGET (to run) or --from RUN_DIR (to report), not both")
        kind, loaded_rep = api.load_study(from_, baseline)
        rep: Any = loaded_rep
        if kind != "compare":
            raise InrdiagError(f"{from_} holds a {kind} study; report it with `inrdiag {kind} --from {from_}`")
    else:
        if target is None:
            raise InrdiagError("give TARGET (an image, a volume or a folder of them) or --from RUN_DIR")
        names = (
            parse_schemes(inits)
            if model_code is None
            else list(dict.fromkeys(n.strip() for n in inits.split(",") if n.strip()))
        )  # checked against the inlet schemes below
        if seeds < 1:
            raise InrdiagError(f"--seeds must be >= 1, got {seeds}")
        if baseline is not None and baseline not in names:
            raise InrdiagError(f"--baseline {baseline!r} is not one of --inits ({', '.join(names)})")
        if max_jobs is not None and out is None:
            raise InrdiagError("--max-jobs stops early; give --out RUN_DIR to keep the finished jobs")
        cfg = FitConfig(depth=depth, width=width, steps=steps, lr=lr, batch_size=batch_size, seed=seed, device=device,
                        holdout_stride=holdout_stride, threads=threads)  # fmt: skip
        cfg.validate()
        if not Path(target).is_dir():
            from ..fitting.targets import METRIC_NAME, load_target

            tgt = load_target(target, size, kind=target_kind, seconds=seconds)  # bad input refused before any work
            factory = None
            if model_code is not None:  # the user's own class, built by their code for every run
                from ..models.usercode import ModelCode, seeded_builder

                bad = [n for n in names if n not in ("keep", "default", "rank-expand", "siren")]
                if bad:
                    raise InrdiagError(f"--inits {','.join(bad)} with --model-code: allowed keep, default, "
                                       "rank-expand, siren (inlet schemes; keep: as your code builds it)")  # fmt: skip
                factory = seeded_builder(ModelCode.parse(model_code, model_args))
            if target_kind != "auto" or seconds is not None or factory is not None:  # one target, this process
                if out is not None or jobs != 1:
                    raise InrdiagError("--target-kind/--seconds/--model-code compare one target in this process; "
                                       "drop --out/--jobs")  # fmt: skip
                from ..study.single import compare as run_single

                name = METRIC_NAME[tgt.kind]
                with _progress(True) as update:
                    cb = None if update is None else (
                        lambda i, sd, st, n, lo, m: update(f"{i} seed {sd}", st, n, _info(name, lo, m)))  # fmt: skip
                    res = run_single(tgt, names, seeds, cfg, cb, model_factory=factory)
                _show_compare(res, plot, csv, json, force, device, threads)
                return
        elif target_kind != "auto" or seconds is not None or model_code is not None:
            raise InrdiagError("--target-kind/--seconds/--model-code apply to one target file, not a folder")
        if model_args is not None and model_code is None:
            raise InrdiagError("--model-args applies only with --model-code FILE.py:Class")
        with job_progress(True) as (on_job, on_step):
            rep, outcome = api.compare_folder(target, names, seeds, cfg, baseline=baseline, size=size, out=out,
                                              workers=jobs, max_jobs=max_jobs, progress=on_job, on_step=on_step)  # fmt: skip
        if not outcome.main:
            return
        if rep is None:
            show_pending(json, outcome)
            return
    _show_compare(rep, plot, csv, json, force, device, threads)


def _show_compare(rep: Any, plot: str | None, csv: str | None, json: bool, force: bool, device: str,
                  threads: int | None) -> None:  # fmt: skip
    """Render a CompareResult (one target) or a CompareStudy (a folder)."""
    from dataclasses import replace

    from ..report import study as R
    from ..study.single import CompareResult

    saved: dict[str, str] = {}
    if isinstance(rep, CompareResult):
        rep.config = replace(rep.config, device=device, threads=threads)
        if csv:
            head, rows = R.compare_result_csv(rep)
            R.write_csv(csv, head, rows, force)
            saved["csv"] = csv
        if plot:
            from ..report.fit import plot_compare

            plot_compare(rep, plot, force)
            saved["plot"] = plot
        from ..report.fit import render_compare

        show(json, rep.to_dict(), render_compare, rep, saved)
        return
    if csv:
        head, rows = rep.csv_rows()
        R.write_csv(csv, head, rows, force)
        saved["csv"] = csv
    if plot:
        R.plot_compare_study(rep, plot, force)
        saved["plot"] = plot
    from ..report.study import render_compare_study

    show(json, {**rep.to_dict(), "outputs": saved}, render_compare_study, rep, saved)


@app.command()
@with_loading
def reinit(
    model: ModelArg,
    scheme: Annotated[
        str, typer.Option("--scheme", help="default|rank-expand|siren: the inlet's new init.")
    ] = "rank-expand",
    output: Annotated[
        str, typer.Option("-o", "--output", help="Output .safetensors (inrdiag format).", show_default=False)
    ] = "",
    seed: SeedOpt = 0,
    json: JsonOpt = False,
    force: ForceOpt = False,
    loading: Loading | None = None,
) -> None:
    """Re-initialise only the inlet (first linear layer) of a checkpoint; every other tensor is kept."""
    from ..errors import InrdiagError

    if not output:
        raise InrdiagError("give the output path with -o OUT.safetensors")
    check_outputs(force, [model], **{"-o": output})
    from ..checkpoints.save import save
    from ..models.inits import get_scheme, reinit_inlet
    from ..fitting.targets import file_sha256

    get_scheme(scheme)
    loaded = load_model(model, loading)
    if loaded.heads is not None:
        raise InrdiagError(f"{model} is a cohort checkpoint; reinit writes single models only")
    prov = {**loaded.provenance, "reinit": {"scheme": scheme, "seed": seed, "source": str(model),
                                            "source_sha256": file_sha256(model)}}  # fmt: skip
    notes: list[str] = []
    from ..models.usercode import UserLoaded

    if isinstance(loaded, UserLoaded):  # the user's module (--model-code): its first nn.Linear, its own key names
        from ..models.usercode import reinit_user_inlet, save_user_state

        notes = reinit_user_inlet(loaded, scheme, seed)
        save_user_state(loaded, output, prov, force)
        from ..models.adapter import as_adapter

        inlet = as_adapter(loaded).linear(0)
    else:
        reinit_inlet(loaded.model, scheme, seed)
        save(loaded.model, output, prov, force)
        inlet = loaded.model.linear(0)
    info = {"source": str(model), "scheme": scheme, "seed": seed, "output": output,
            "inlet_shape": list(inlet.weight.shape), "notes": notes}  # fmt: skip
    from ..report.fit import render_reinit

    show(json, info, render_reinit, info)
