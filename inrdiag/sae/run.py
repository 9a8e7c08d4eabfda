"""The whole ``inrdiag sae`` computation on a loaded checkpoint, callable from Python: the target it was fitted
to (found from its provenance and checked by sha256), the SAE (trained, or read from a folder), the analysis,
and the SAELens-layout save.

    loaded = inrdiag.load("fit.safetensors")
    run = run_sae(loaded, 1, config=SAEConfig(atoms=1024))
    run.report.fvu, run.report.harmful(5)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoints.load import Loaded
from ..files import check_not_input, user_path
from ..fitting.targets import Target, file_sha256, fit_to_model, load_target
from ..models.adapter import ModuleAdapter, as_adapter
from ..models.usercode import UserLoaded
from ..progress import Progress
from .analysis import SAEReport, analyse, check_layer
from .config import CFG_FILE, WEIGHTS_FILE, SAEConfig, SAEError
from .model import Codes, SparseAutoencoder
from .saelens import LoadedSAE, check_sae_out, load_sae, save_sae

PathLike = str | os.PathLike[str]
ModelLike = Loaded | UserLoaded | nn.Module | ModuleAdapter


# ---------------------------------------------------------------- the target
@dataclass
class ResolvedTarget:
    """What ``resolve_target`` returns: the target (values matched to the model's outputs) and notes on where it
    came from and what was done to it."""

    target: Target
    notes: list[str]


def resolve_target(model: ModelLike, target: PathLike | None = None, grid: int | None = None) -> ResolvedTarget:
    """The target to score ``model`` against: ``target`` when given, else the one its checkpoint records.

    A model from ``inrdiag fit`` records its target's path, sha256 and resolution: the file is looked up as
    given and beside the checkpoint, and only a file with the recorded sha256 is taken. A cohort checkpoint
    records its folder and image names: head D's image. ``grid``: points per axis (default: the fitted
    resolution when it is square, else the file's own). The target is checked against the model's input
    dimension and its channels matched to the outputs (gray repeated to RGB, RGB to luma), with a note.
    """
    ad = as_adapter(model)
    loaded = model if isinstance(model, (Loaded, UserLoaded)) else None
    prov: dict[str, Any] = dict(loaded.provenance or {}) if loaded is not None else {}
    heads = loaded.heads if loaded is not None else None
    notes: list[str] = []
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 2):
        raise SAEError(f"--grid must be at least 2 points per axis, got {grid}")
    shape = [int(v) for v in (prov.get("target_shape") or [])]
    if heads is not None and (prov.get("recipe") or {}).get("size"):
        shape = [int(prov["recipe"]["size"])] * 2
    # load_target resamples to n points on every axis; a non-square fit kept its target's own shape
    size = grid if grid is not None else (shape[0] if shape and len(set(shape)) == 1 else None)
    if target is not None:
        tgt = load_target(os.fspath(target), size=size)
    elif loaded is None:
        raise SAEError(f"a {type(ad.module).__name__} module records no target; give target= (--target IMAGE)")
    else:
        here = Path(loaded.path).parent
        want = None
        if heads is not None:
            names = getattr(loaded, "head_names", None) or []
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
            same = [c for c in files if file_sha256(c) == want]
            if not same:
                raise SAEError(f"{what}: {', '.join(map(str, files))} differ from the fitted file (sha256); "
                               "give --target IMAGE to use it anyway")  # fmt: skip
            files = same
        found = files[0]
        tgt = load_target(found, size=size, kind=prov.get("target_kind"),
                          seconds=(prov.get("target_meta") or {}).get("crop_seconds"))  # fmt: skip
        notes.append(f"target: {what} ({found})")
    notes.extend(tgt.notes)
    if shape and list(tgt.shape) != shape and grid is None:
        notes.append(f"grid {list(tgt.shape)} differs from the fitted resolution {shape}")
    note = fit_to_model(tgt, ad.in_features, ad.out_features)
    if note:
        notes.append(note)
    return ResolvedTarget(target=tgt, notes=notes)


# ---------------------------------------------------------------- the whole run
@dataclass
class SAERun:
    """What ``run_sae`` returns: the report, the SAE and its codes, the target scored against, the files saved."""

    report: SAEReport
    sae: SparseAutoencoder
    codes: Codes
    target: Target
    #: The SAE's two files when ``out`` was given, else empty.
    saved: list[str]

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict()


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


def run_sae(
    model: ModelLike,
    layer: int,
    *,
    target: PathLike | None = None,
    grid: int | None = None,
    config: SAEConfig | None = None,
    sae: PathLike | LoadedSAE | SparseAutoencoder | None = None,
    ablate: int | None = None,
    device: str = "auto",
    out: PathLike | None = None,
    force: bool = False,
    writes: Mapping[str, PathLike | None] | None = None,
    progress: Progress | None = None,
) -> SAERun:
    """``inrdiag sae``: an SAE on layer ``layer``'s activations over the target's grid, its atoms and ablations.

    ``model``: a loaded checkpoint (``inrdiag.load``; its provenance gives the default target, see
    ``resolve_target``), or any module ``as_adapter`` takes (then ``target`` is needed). ``config``: how to
    train (default ``SAEConfig()``); ``sae``: a saved SAE folder (or ``load_sae``'s result, or a module) to
    analyse instead of training one. ``out``: save the SAE there (SAELens layout, ``save_sae``). ``writes``:
    other paths the caller will write afterwards, by label (``{"--atoms-png": "atoms.png"}``): refused, before
    any work, when one is an input (the model, target or SAE files) or inside ``out``. ``progress(step, total, loss, metric)``.
    """
    cfg = SAEConfig() if config is None else config
    if not isinstance(cfg, SAEConfig):
        raise SAEError(f"config must be an SAEConfig, got {type(cfg).__name__}")
    cfg.validate()
    loaded = model if isinstance(model, (Loaded, UserLoaded)) else None
    sae_files: list[PathLike] = []
    if isinstance(sae, (str, os.PathLike)):
        sae_files = [user_path(sae) / name for name in (WEIGHTS_FILE, CFG_FILE)]
    elif isinstance(sae, LoadedSAE):
        sae_files = [sae.folder / name for name in (WEIGHTS_FILE, CFG_FILE)]
    inputs: list[PathLike | None] = [loaded.path if loaded is not None else None, target, *sae_files]
    later = {label: user_path(p) for label, p in (writes or {}).items() if p is not None}
    for label, p in later.items():
        check_not_input(p, inputs, label)
    out_files: list[Path] = []
    if out is not None:
        folder = user_path(out)
        out_files = check_sae_out(out, force, inputs)
        clash = {folder.resolve()} | {p.resolve() for p in out_files}
        for label, p in later.items():
            if p.resolve() in clash:
                raise SAEError(f"{label} {p} and -o {out} would write the same path; give another path")
            if _inside(p, folder):
                raise SAEError(f"{label} {p} is inside the -o folder {out}, which is written as a whole (the SAE "
                               "files only); give a path outside it")  # fmt: skip
    ad = as_adapter(model)
    check_layer(ad, layer)
    name = loaded.path if loaded is not None else type(ad.module).__name__
    if loaded is not None and loaded.nonfinite:
        raise SAEError(f"{name}: non-finite weights in {', '.join(loaded.nonfinite[:3])}; nothing to decompose")
    notes: list[str] = []
    given: LoadedSAE | SparseAutoencoder | None
    given = load_sae(sae) if isinstance(sae, (str, os.PathLike)) else sae
    if isinstance(given, LoadedSAE):
        notes.append(f"SAE loaded from {given.folder} (training flags ignored)")
        hook = str(given.info["hook_name"] or "")
        if hook.startswith("layer ") and not hook.startswith(f"layer {layer} "):
            notes.append(f"the SAE was trained on {hook.split(' (')[0]}, not on layer {layer}")
    resolved = resolve_target(model, target, grid)
    tgt = resolved.target
    for label, p in later.items():  # the target found in the provenance
        check_not_input(p, [tgt.path], label)
    for p in out_files:
        check_not_input(p, [tgt.path], "-o")
    result = analyse(ad, layer, tgt.coords(), tgt.values, tgt.kind, None if given is not None else cfg,
                     device=device, ablate=ablate, progress=progress, grid=tgt.shape, model_name=name,
                     target_info=tgt.to_dict(), sae=given)  # fmt: skip
    rep = result.report
    rep.notes = notes + resolved.notes + rep.notes
    saved: list[str] = []
    if out is not None:
        meta = {"model_name": name, "hook_name": f"layer {layer} ({rep.layer_name}) activations",
                "target": tgt.path, "grid": list(tgt.shape)}  # fmt: skip
        saved = save_sae(result.sae, rep.config, out, meta, force, [*inputs, tgt.path])
        rep.notes.append("saved " + ", ".join(saved))
    return SAERun(report=rep, sae=result.sae, codes=result.codes, target=tgt, saved=saved)
