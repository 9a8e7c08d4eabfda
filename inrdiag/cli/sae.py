"""``inrdiag sae``: a sparse autoencoder on one layer's activations, its atoms and their ablations.

The command parses, calls ``inrdiag.sae.run.run_sae`` (target from the provenance, SAE training or loading,
analysis, save) and renders; its defaults are ``SAEConfig``'s and the engine's constants."""

from __future__ import annotations

from typing import Annotated

import typer

from ..sae.config import ATOM_MAPS, CFG_FILE, SHOW_ROWS, WEIGHTS_FILE, SAEConfig
from .app import DeviceOpt, ForceOpt, JsonOpt, ModelArg, app, check_outputs, load_model, show  # fmt: skip
from .app import Loading, progress_bar, seed_param, with_loading, wrote

SAE = "Sparse autoencoder"
DEFAULT = SAEConfig()
SeedOpt = Annotated[int, seed_param("Seed of the SAE init and batches.", SAE)]


@app.command("sae")
@with_loading
def sae_cmd(
    model: ModelArg,
    layer: Annotated[
        int,
        typer.Option(
            "--layer", "-l", help="Hidden layer to decompose (index as in `inrdiag rank`).", show_default=False
        ),
    ],
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Image/occupancy grid to score against (default: the one in the checkpoint's "
            "provenance; cohort checkpoints: head D's image).",
            show_default=False,
        ),
    ] = None,
    grid: Annotated[
        int | None,
        typer.Option(
            "--grid",
            help="Points per axis (default: the fitted resolution, else the target's own).",
            show_default=False,
        ),
    ] = None,
    atoms: Annotated[int, typer.Option("--atoms", help="Dictionary size m.", rich_help_panel=SAE)] = DEFAULT.atoms,
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="topk (SAELens 'topk') or relu (ReLU + L1, SAELens 'standard').", rich_help_panel=SAE
        ),
    ] = DEFAULT.kind,
    k: Annotated[int, typer.Option("--k", help="TopK: active atoms per point.", rich_help_panel=SAE)] = DEFAULT.k,
    l1: Annotated[
        float,
        typer.Option("--l1", help="relu: L1 coefficient (on f * ||W_dec row||, variance-scaled).", rich_help_panel=SAE),
    ] = DEFAULT.l1,  # fmt: skip
    steps: Annotated[int, typer.Option("--steps", help="Adam steps.", rich_help_panel=SAE)] = DEFAULT.steps,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Points per step.", rich_help_panel=SAE)
    ] = DEFAULT.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.", rich_help_panel=SAE)] = DEFAULT.lr,
    seed: SeedOpt = DEFAULT.seed,
    load_sae_dir: Annotated[
        str | None,
        typer.Option(
            "--sae",
            help="Analyse a saved SAE (a folder written by -o) instead of training one.",
            rich_help_panel=SAE,
            show_default=False,
        ),
    ] = None,
    ablate: Annotated[
        int | None,
        typer.Option(
            "--ablate",
            help="Ablate the N atoms of largest activation mass (0: none) (default: all).",
            show_default=False,
        ),
    ] = None,
    show_n: Annotated[int, typer.Option("--show", help="Rows in the most-harmful-atoms table.")] = SHOW_ROWS,
    atoms_png: Annotated[
        str | None,
        typer.Option(
            "--atoms-png", help=f"Write the activation maps of the top {ATOM_MAPS} atoms (PNG).", show_default=False
        ),  # fmt: skip
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--out",
            help="Save the SAE here (folder: sae_weights.safetensors + cfg.json, SAELens).",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
    force: ForceOpt = False,
    loading: Loading | None = None,
) -> None:
    """Train a sparse autoencoder on layer K's activations over the grid; report FVU, L0, dead atoms, the PSNR
    with the SAE spliced in, per-atom coverage and spatial spread, and single-atom ablations (batched, exact)."""
    from pathlib import Path

    from ..sae.config import SAEError

    if show_n < 0:
        raise SAEError(f"--show must be >= 0, got {show_n}")
    sae_files = [str(Path(load_sae_dir) / n) for n in (WEIGHTS_FILE, CFG_FILE)] if load_sae_dir else []
    check_outputs(force, [model, target, *sae_files], **{"--atoms-png": atoms_png})
    cfg = SAEConfig(atoms=atoms, kind=kind, k=k, l1=l1, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    cfg.validate()  # bad flags are refused before the model is loaded
    loaded = load_model(model, loading)
    from ..sae.run import run_sae

    with progress_bar(transient=True, disable=json) as bar:
        task = bar.add_task(f"SAE on layer {layer}", total=None, info="")

        def cb(step: int, total: int, loss: float, metric: float) -> None:
            if step % 10 == 0 or step == total:
                bar.update(task, completed=step, total=total, info=f"loss {loss:.3g}")

        run = run_sae(loaded, layer, target=target, grid=grid, config=cfg, sae=load_sae_dir, ablate=ablate,
                      device=device, out=out, force=force, writes={"--atoms-png": atoms_png}, progress=cb)  # fmt: skip
    if atoms_png:
        from ..report.sae import plot_atoms

        plot_atoms(run.report, run.codes, run.target.shape, atoms_png, force, target=run.target)
    from ..report.sae import render_sae

    show(json, run.to_dict(), render_sae, run.report, show_n)
    wrote(json, "atom maps", atoms_png)
