"""``inrdiag cohort-train`` and ``inrdiag freeze-sweep``."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import DeviceOpt, ForceOpt, JsonOpt, PlotOpt, app, check_outputs, seed_param, show
from .study import FromOpt, JobsOpt, MaxJobsOpt, OutDirOpt

RECIPE = "Cohort recipe"
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        help="siren (sine, w0=30) or ff (Fourier features + ReLU). (default: siren)",
        rich_help_panel=RECIPE,
        show_default=False,
    ),
]
DepthOpt = Annotated[
    int | None,
    typer.Option(
        "--depth",
        help="Hidden layers (the network has depth+1 linear layers). (default: 4)",
        rich_help_panel=RECIPE,
        show_default=False,
    ),
]
WidthOpt = Annotated[
    int | None,
    typer.Option("--width", help="Units per hidden layer. (default: 128)", rich_help_panel=RECIPE, show_default=False),
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
        "--size", help="Images are resized to size x size. (default: 64)", rich_help_panel=RECIPE, show_default=False
    ),
]
SeedOpt = Annotated[int, seed_param("Seed of initialisation and of the held-out split.")]


def _recipe(backbone, depth, width, shared, size, steps, lr, seed, base=None):
    from ..cohort.train import CohortRecipe

    given = {"backbone": backbone, "depth": depth, "width": width, "shared_layers": shared, "size": size,
             "steps": steps, "lr": lr}  # fmt: skip
    if base is None:
        kw = {k: v for k, v in given.items() if v is not None}
        if "shared_layers" not in kw:
            kw["shared_layers"] = kw.get("depth", 4)
        return CohortRecipe(seed=seed, **kw)
    from ..cohort.train import CohortError

    for k in ("backbone", "depth", "width", "shared_layers"):
        if given[k] is not None and given[k] != getattr(base, k):
            raise CohortError(f"the cohort checkpoint has {k.replace('_', '-')}={getattr(base, k)}, "
                              f"but --{k.replace('_', '-')} {given[k]} was given; drop the flag or retrain")  # fmt: skip
    if size is not None:
        base.size = size
    return base


def _progress(json: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..report.common import console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=console(stderr=True), transient=True, disable=json)  # fmt: skip


def _train(folder, recipe, device, json, images=None):
    from ..cohort.train import check_training_memory, list_images, load_images, train_cohort
    from ..device import resolve_device

    paths, other = list_images(folder) if images is None else (images, [])
    check_training_memory(len(paths), recipe.size * recipe.size, 3, recipe, resolve_device(device))
    data = load_images(paths, recipe.size)
    data.skipped = [f"{n} (not an image file)" for n in other] + data.skipped
    with _progress(json) as bar:
        task = bar.add_task("cohort training", total=recipe.steps, info="")

        def cb(step, total, loss):
            if step % 10 == 0 or step == total:
                bar.update(task, completed=step, info=f"loss {loss:.2e}")

        models, res = train_cohort(data, recipe, device=device, progress=cb)
    res.skipped = data.skipped
    return models, res


def _train_sharded(folder, recipe, device, json):
    """cohort-train under torchrun: images and heads sharded over ranks, encoder gradients all-reduced."""
    from ..cohort.train import list_images, train_cohort_sharded
    from ..study import distributed as D

    paths, other = list_images(folder)
    r = D.init_from_env(device)
    with D.group(r):
        if r.main and not json:
            with _progress(json) as bar:
                task = bar.add_task(f"cohort training ({r.world} ranks)", total=recipe.steps, info="")

                def cb(step, total, loss):
                    if step % 10 == 0 or step == total:
                        bar.update(task, completed=step, info=f"loss {loss:.2e}")

                models, res = train_cohort_sharded(paths, recipe, r, cb)
        else:
            models, res = train_cohort_sharded(paths, recipe, r)
    if res is not None:
        res.skipped = [f"{n} (not an image file)" for n in other] + res.skipped
    return models, res


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
    steps: Annotated[int, typer.Option("--steps", help="Joint training steps (full batch).")] = 1000,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Adam learning rate. (default: 1e-4 siren, 1e-3 ff)", show_default=False),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Fit one shared encoder (the first K linear layers) and one head per image, jointly."""
    from pathlib import Path

    from ..cohort.train import save_cohort
    from ..files import check_writable

    check_writable(out, force)
    recipe = _recipe(backbone, depth, width, shared_layers, size, steps, lr, seed)
    from ..study.distributed import launched_by_torchrun

    if launched_by_torchrun():
        models, res = _train_sharded(folder, recipe, device, json)
        if models is None:
            return
    else:
        models, res = _train(folder, recipe, device, json)
    prov = {"psnr_mean": sum(res.psnr) / len(res.psnr), "folder": str(Path(folder).resolve())}
    save_cohort(models, recipe, res.names, out, provenance=prov, force=force)
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
    holdout: Annotated[int, typer.Option("--holdout", help="Without --test: images held out of FOLDER (seeded).")] = 2,
    splits: Annotated[
        int, typer.Option("--splits", help="Held-out splits of FOLDER (split i drawn with seed + i); one cohort each.")
    ] = 1,
    seeds: Annotated[
        int, typer.Option("--seeds", help="Seeds per split (cohort init and sweep fits: seed, seed+1, ...).")
    ] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Fitting steps per held-out image and freeze depth.")] = 300,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Adam learning rate of the sweep fits. (default: the recipe's)", show_default=False),
    ] = None,
    cohort_steps: Annotated[
        int | None,
        typer.Option(
            "--cohort-steps",
            help="Joint training steps when a cohort is trained first. (default: 1000)",
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
    import math
    from pathlib import Path

    from ..cohort.train import CohortError, list_images, load_cohort
    from ..study import api
    from ..study.distributed import launched_by_torchrun

    check_outputs(force, **{"-o": save, "--plot": plot})
    if from_ is not None:
        if folder is not None:
            raise CohortError("give either FOLDER (to run) or --from RUN_DIR (to report), not both")
        kind, rep = api.load_study(from_)
        if kind != "freeze-sweep":
            raise CohortError(f"{from_} holds a {kind} study; report it with `inrdiag {kind} --from {from_}`")
        _show_sweep(rep, [], plot, json, force)
        return
    if folder is None:
        raise CohortError("give FOLDER (images) or --from RUN_DIR")
    if steps < 1:
        raise CohortError(f"--steps must be >= 1, got {steps}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise CohortError(f"--lr must be a positive number, got {lr}")
    if splits < 1 or seeds < 1:
        raise CohortError(f"--splits and --seeds must be >= 1, got {splits} and {seeds}")
    if max_jobs is not None and out is None:
        raise CohortError("--max-jobs stops early; give --out RUN_DIR to keep the finished jobs")
    if out is not None and out.endswith(".safetensors"):
        raise CohortError(f"--out {out} names the run folder of a study; save the trained cohort with -o/--save FILE")
    study = splits > 1 or seeds > 1 or out is not None or jobs > 1 or launched_by_torchrun()
    if save and study:
        raise CohortError("-o saves the cohort of a single sweep; with --splits/--seeds/--out/--jobs each job trains "
                          "its own cohort (not kept)")  # fmt: skip
    paths, other = list_images(folder)
    ckpt = cohort
    if ckpt is None:
        found = sorted(Path(folder).glob("*.safetensors"))
        if len(found) > 1:
            raise CohortError(f"{folder} holds {len(found)} .safetensors files; choose one with --cohort")
        ckpt = str(found[0]) if found else None
    notes = [f"skipped (not an image file): {', '.join(other)}"] if other else []
    if ckpt and save:
        raise CohortError("-o saves a cohort trained by this command; a checkpoint was given, so nothing is trained")
    if save:
        _legacy_sweep(folder, paths, test, holdout, steps, lr, cohort_steps, backbone, depth, width, shared_layers,
                      size, save, seed, device, json, plot, force, notes)  # fmt: skip
        return
    test_paths = list_images(test)[0] if test else None
    if ckpt:
        _, base, names = load_cohort(ckpt)
        recipe = _recipe(backbone, depth, width, shared_layers, size, cohort_steps, None, seed, base=base)
        recipe.seed = seed
        kw = {"cohort": ckpt, "cohort_names": names}
    else:
        recipe = _recipe(backbone, depth, width, shared_layers, size, cohort_steps, None, seed)
        kw = {}
    from .study import job_progress, show_pending

    with job_progress(not json) as (on_job, _):
        rep, outcome = api.freeze_folder(paths, recipe, out=out, device=device, threads=threads, workers=jobs,
                                         max_jobs=max_jobs, progress=on_job, splits=splits, seeds=seeds,
                                         holdout=holdout, steps=steps, lr=lr, test=test_paths, **kw)  # fmt: skip
    if not outcome.main:
        return
    if rep is None:
        show_pending(json, outcome)
        return
    _show_sweep(rep, notes, plot, json, force)


def _show_sweep(rep, notes, plot, json, force) -> None:
    from ..cohort.freeze import SweepReport

    if isinstance(rep, SweepReport):
        rep.notes = notes + rep.notes
        if plot:
            from ..report.cohort import plot_sweep

            plot_sweep(rep, plot, force)
        from ..report.cohort import render_sweep

        show(json, rep.to_dict(), render_sweep, rep)
        return
    from ..report import study as R

    rep.notes = notes + rep.notes
    saved = {}
    if plot:
        R.plot_freeze_study(rep, plot, force)
        saved["plot"] = plot
    from ..report.study import render_freeze_study

    show(json, {**rep.to_dict(), "outputs": saved}, render_freeze_study, rep, saved)


def _legacy_sweep(folder, paths, test, holdout, steps, lr, cohort_steps, backbone, depth, width, shared_layers, size,
                  save, seed, device, json, plot, force, notes) -> None:  # fmt: skip
    """One sweep whose freshly trained cohort is kept (-o): train here, then sweep, in this process."""
    import random
    from pathlib import Path

    from ..cohort.train import CohortError, list_images, load_images, save_cohort
    from ..cohort.freeze import freeze_sweep

    recipe = _recipe(backbone, depth, width, shared_layers, size, cohort_steps, None, seed)
    if test:
        train_paths, test_paths = paths, list_images(test)[0]
    else:
        if len(paths) < 2:
            raise CohortError(f"{folder} holds {len(paths)} image(s); a sweep needs at least 2 (cohort + held-out)")
        if not 1 <= holdout < len(paths):
            raise CohortError(f"--holdout must be 1..{len(paths) - 1} for {len(paths)} images, got {holdout}")
        order = list(paths)
        random.Random(seed).shuffle(order)
        test_paths, train_paths = sorted(order[:holdout]), sorted(order[holdout:])
    models, res = _train(folder, recipe, device, json, images=train_paths)
    train_names = res.names
    notes.append(f"cohort trained here on {len(train_names)} images: mean PSNR {sum(res.psnr) / len(res.psnr):.2f} dB")
    save_cohort(models, recipe, train_names, save, provenance={"folder": str(Path(folder).resolve())}, force=force)
    notes.append(f"cohort saved to {save}")
    test_data = load_images(test_paths, recipe.size, channels=models[0].spec.out_features)
    notes += [f"skipped: {s}" for s in test_data.skipped] + [f"converted: {s}" for s in test_data.resized]
    with _progress(json) as bar:
        task = bar.add_task("freeze sweep", total=None, info="")

        def cb(label, done, total):
            bar.update(task, completed=done, total=total, info=label)

        rep = freeze_sweep(models[0], recipe, train_names, test_data, steps=steps, lr=lr, device=device,
                           progress=cb, seed=seed)  # fmt: skip
    _show_sweep(rep, notes, plot, json, force)
