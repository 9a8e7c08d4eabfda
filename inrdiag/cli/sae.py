"""``inrdiag sae``: a sparse autoencoder on one layer's activations, its atoms and their ablations."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import DeviceOpt, ForceOpt, JsonOpt, ModelArg, app, check_outputs, load_model, show  # fmt: skip
from .app import Loading, progress_bar, seed_param, with_loading, wrote

SAE = "Sparse autoencoder"
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
    atoms: Annotated[int, typer.Option("--atoms", help="Dictionary size m.", rich_help_panel=SAE)] = 4096,
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="topk (SAELens 'topk') or relu (ReLU + L1, SAELens 'standard').", rich_help_panel=SAE
        ),
    ] = "topk",
    k: Annotated[int, typer.Option("--k", help="TopK: active atoms per point.", rich_help_panel=SAE)] = 32,
    l1: Annotated[
        float,
        typer.Option("--l1", help="relu: L1 coefficient (on f * ||W_dec row||, variance-scaled).", rich_help_panel=SAE),
    ] = 0.1,  # fmt: skip
    steps: Annotated[int, typer.Option("--steps", help="Adam steps.", rich_help_panel=SAE)] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Points per step.", rich_help_panel=SAE)] = 1024,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.", rich_help_panel=SAE)] = 1e-3,
    seed: SeedOpt = 0,
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
    show_n: Annotated[int, typer.Option("--show", help="Rows in the most-harmful-atoms table.")] = 10,
    atoms_png: Annotated[
        str | None,
        typer.Option("--atoms-png", help="Write the activation maps of the top 16 atoms (PNG).", show_default=False),
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

    from ..sae.model import SAEConfig, SAEError
    from ..sae.analysis import check_layer
    from ..sae.saelens import check_sae_out

    from ..files import check_not_input, user_path
    from ..sae.model import CFG_FILE, WEIGHTS_FILE

    inputs = [model, target] + ([str(Path(load_sae_dir) / n) for n in (WEIGHTS_FILE, CFG_FILE)] if load_sae_dir else [])
    check_outputs(force, inputs, **{"--atoms-png": atoms_png})
    if out:
        clash = {user_path(out).resolve()} | {p.resolve() for p in check_sae_out(out, force, inputs)}
        if atoms_png and user_path(atoms_png).resolve() in clash:
            raise SAEError(f"--atoms-png {atoms_png} and -o {out} would write the same path; give another path")
        if atoms_png and user_path(atoms_png).resolve().parent == user_path(out).resolve():
            raise SAEError(f"--atoms-png {atoms_png} is inside the -o folder {out}, which is written as a whole "
                           "(the SAE files only); give a path outside it")  # fmt: skip
    cfg = SAEConfig(atoms=atoms, kind=kind, k=k, l1=l1, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    cfg.validate()
    if show_n < 0:
        raise SAEError(f"--show must be >= 0, got {show_n}")
    from ..models.adapter import as_adapter

    loaded = load_model(model, loading)
    ad = as_adapter(loaded)
    check_layer(ad, layer)
    if loaded.nonfinite:
        raise SAEError(f"{model}: non-finite weights in {', '.join(loaded.nonfinite[:3])}; nothing to decompose")
    sae, snotes, source = None, [], None
    if load_sae_dir:
        from ..sae.saelens import load_sae, loaded_config, sae_file_info

        sae, scfg = load_sae(user_path(load_sae_dir))
        cfg = loaded_config(sae, scfg)
        source = sae_file_info(load_sae_dir, sae, scfg)
        snotes.append(f"SAE loaded from {load_sae_dir} (training flags ignored)")
        hook = str(source["hook_name"] or "")
        if hook.startswith("layer ") and not hook.startswith(f"layer {layer} "):
            snotes.append(f"the SAE was trained on {hook.split(' (')[0]}, not on layer {layer}")
    tgt, tnotes = resolve_target(loaded, ad, target, grid)
    for path in (atoms_png, *(check_sae_out(out, force) if out else [])):  # the target found in the provenance
        if path:
            check_not_input(user_path(path), [tgt.path], "--atoms-png" if path == atoms_png else "-o")
    rep, sae, codes = _run(loaded, ad, layer, tgt, cfg, device, ablate, json, sae)
    rep.notes = snotes + tnotes + rep.notes
    if atoms_png:
        from ..report.sae import plot_atoms

        plot_atoms(rep, codes, tgt.shape, atoms_png, force, target=tgt)
    if out:
        from ..sae.saelens import save_sae

        meta = {"model_name": str(model), "hook_name": f"layer {layer} ({rep.layer_name}) activations",
                "target": tgt.path, "grid": list(tgt.shape)}  # fmt: skip
        rep.notes.append("saved " + ", ".join(save_sae(sae, rep.config, out, meta, force, [*inputs, tgt.path])))
    data = rep.to_dict()
    if source:  # the file's own description, not training defaults it never stated
        ours = (source["training"] or {}).get("by") == "inrdiag"
        unknown = {} if ours else dict.fromkeys(("l1", "lr", "batch_size", "seed", "aux_coef", "dead_after"))
        kind = "jumprelu" if source["architecture"] == "jumprelu" else data["sae"]["kind"]
        data["sae"] = {**data["sae"], **unknown, "kind": kind, "architecture": source["architecture"], "file": source}
    from ..report.sae import render_sae

    show(json, data, render_sae, rep, show_n, source)
    wrote(json, "atom maps", atoms_png)


def resolve_target(loaded, ad, target: str | None, grid: int | None):
    """The target (values matched to the model's outputs) and notes on where it came from."""
    from pathlib import Path

    from ..sae.model import SAEError
    from ..fitting.targets import fit_to_model, load_target

    prov = loaded.provenance or {}
    notes: list[str] = []
    if grid is not None and grid < 2:
        raise SAEError(f"--grid must be at least 2 points per axis, got {grid}")
    shape = [int(v) for v in (prov.get("target_shape") or [])]
    if loaded.heads is not None and (prov.get("recipe") or {}).get("size"):
        shape = [int(prov["recipe"]["size"])] * 2
    # load_target resamples to n points on every axis; a non-square fit kept its target's own shape
    size = grid if grid is not None else (shape[0] if shape and len(set(shape)) == 1 else None)
    if target is None:
        here = Path(loaded.path).parent
        want = None
        if loaded.heads is not None:
            names = loaded.head_names or []
            d = loaded.head or 0
            if d >= len(names):
                raise SAEError(f"{loaded.path}: no image name recorded for head {d}; give --target IMAGE")
            folders = [Path(prov["folder"])] if prov.get("folder") else []
            candidates = [f / names[d] for f in folders + [here]]
            what = f"head {d}'s cohort image {names[d]}"
        elif prov.get("target"):
            t = Path(prov["target"])
            candidates = [t, here / t.name]
            want = prov.get("target_sha256")
            what = f"the fitted target {t}"
        else:
            raise SAEError(f"{loaded.path} records no target (not fitted by inrdiag); give --target IMAGE")
        where = ", ".join(dict.fromkeys(str(c.parent) for c in candidates))
        files = [c for c in dict.fromkeys(candidates) if c.is_file()]
        if not files:
            raise SAEError(f"{what} was not found (looked in {where}); give --target IMAGE")
        if want:  # the file the model was fitted to, not just one with its name
            from ..fitting.targets import file_sha256

            same = [c for c in files if file_sha256(c) == want]
            if not same:
                raise SAEError(f"{what}: {', '.join(map(str, files))} differ from the fitted file (sha256); "
                               "give --target IMAGE to use it anyway")  # fmt: skip
            files = same
        found = files[0]
        tgt = load_target(
            found, size=size, kind=prov.get("target_kind"), seconds=(prov.get("target_meta") or {}).get("crop_seconds")
        )
        notes.append(f"target: {what} ({found})")
    else:
        tgt = load_target(target, size=size)
    notes.extend(tgt.notes)
    if shape and list(tgt.shape) != shape and grid is None:
        notes.append(f"grid {list(tgt.shape)} differs from the fitted resolution {shape}")
    note = fit_to_model(tgt, ad.in_features, ad.out_features)
    if note:
        notes.append(note)
    return tgt, notes


def _run(loaded, ad, layer, tgt, cfg, device, ablate, json, sae):
    from ..sae.analysis import analyse

    name = ad.layers[layer].name if layer < len(ad.layers) else f"linears.{layer}"
    with progress_bar(transient=True, disable=json) as bar:
        task = bar.add_task(f"SAE on layer {layer}", total=cfg.steps, info="")

        def cb(step, total, loss):
            if step % 10 == 0 or step == total:
                bar.update(task, completed=step, info=f"loss {loss:.3g}")

        return analyse(ad, layer, tgt.coords(), tgt.values, tgt.kind, cfg, device=device, ablate=ablate,
                       progress=cb, grid=tgt.shape, model_name=loaded.path, layer_name=name,
                       target_info=tgt.to_dict(), sae=sae)  # fmt: skip
