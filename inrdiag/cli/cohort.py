"""``inrdiag cohort-train`` and ``inrdiag freeze-sweep``."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import DeviceOpt, ForceOpt, JsonOpt, PlotOpt, app, check_outputs, seed_option, show

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
SeedOpt = seed_option("Seed of initialisation and of the held-out split.")


def _recipe(backbone, depth, width, shared, size, steps, lr, seed, base=None):
    from ..cohort import CohortRecipe

    given = {"backbone": backbone, "depth": depth, "width": width, "shared_layers": shared, "size": size,
             "steps": steps, "lr": lr}  # fmt: skip
    if base is None:
        kw = {k: v for k, v in given.items() if v is not None}
        if "shared_layers" not in kw:
            kw["shared_layers"] = kw.get("depth", 4)
        return CohortRecipe(seed=seed, **kw)
    from ..cohort import CohortError

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
    from ..cohort import list_images, load_images, train_cohort

    paths, other = list_images(folder) if images is None else (images, [])
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

    from ..cohort import save_cohort
    from ..io import check_writable

    check_writable(out, force)
    recipe = _recipe(backbone, depth, width, shared_layers, size, steps, lr, seed)
    models, res = _train(folder, recipe, device, json)
    prov = {"psnr_mean": sum(res.psnr) / len(res.psnr), "folder": str(Path(folder).resolve())}
    save_cohort(models, recipe, res.names, out, provenance=prov, force=force)
    show(json, {**res.to_dict(), "out": out}, "cohort:render_cohort_train", res, out)


@app.command("freeze-sweep")
def freeze_sweep_cmd(
    folder: Annotated[
        str, typer.Argument(help="Folder of images (and optionally one cohort checkpoint).", show_default=False)
    ],
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
        str | None, typer.Option("-o", "--out", help="Save the cohort trained here to this file.", show_default=False)
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
    plot: PlotOpt = None,
    force: ForceOpt = False,
) -> None:
    """Fit held-out images from the shared encoder with k = 0..K layers frozen; compare with k*."""
    import math
    import random
    from pathlib import Path

    from ..cohort import CohortError, list_images, load_cohort, load_images, save_cohort
    from ..freeze import freeze_sweep

    check_outputs(force, **{"-o": save, "--plot": plot})
    if steps < 1:
        raise CohortError(f"--steps must be >= 1, got {steps}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise CohortError(f"--lr must be a positive number, got {lr}")
    paths, other = list_images(folder)
    ckpt = cohort
    if ckpt is None:
        found = sorted(Path(folder).glob("*.safetensors"))
        if len(found) > 1:
            raise CohortError(f"{folder} holds {len(found)} .safetensors files; choose one with --cohort")
        ckpt = str(found[0]) if found else None
    notes = [f"skipped (not an image file): {', '.join(other)}"] if other else []
    if ckpt:
        if save:
            raise CohortError(
                "-o saves a cohort trained by this command; a checkpoint was given, so nothing is trained"
            )
        models, base, names = load_cohort(ckpt)
        recipe = _recipe(backbone, depth, width, shared_layers, size, cohort_steps, None, seed, base=base)
        test_paths = list_images(test)[0] if test else [p for p in paths if p.name not in set(names)]
        if not test_paths:
            raise CohortError(f"every image in {folder} was in the cohort; give held-out images with --test DIR")
        train_names = names
        notes.append(f"encoder from {ckpt}")
    else:
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
        notes.append(
            f"cohort trained here on {len(train_names)} images: mean PSNR {sum(res.psnr) / len(res.psnr):.2f} dB"
        )
        if save:
            save_cohort(models, recipe, train_names, save, provenance={"folder": str(Path(folder).resolve())},
                        force=force)  # fmt: skip
            notes.append(f"cohort saved to {save}")
    test_data = load_images(test_paths, recipe.size, channels=models[0].spec.out_features)
    notes += [f"skipped: {s}" for s in test_data.skipped] + [f"converted: {s}" for s in test_data.resized]
    with _progress(json) as bar:
        task = bar.add_task("freeze sweep", total=None, info="")

        def cb(label, done, total):
            bar.update(task, completed=done, total=total, info=label)

        rep = freeze_sweep(models[0], recipe, train_names, test_data, steps=steps, lr=lr, device=device,
                           progress=cb, seed=seed)  # fmt: skip
    rep.notes = notes + rep.notes
    if plot:
        from ..report.cohort import plot_sweep

        plot_sweep(rep, plot, force)
    show(json, rep.to_dict(), "cohort:render_sweep", rep)
