"""Cohorts from folders of images: what ``inrdiag cohort-train`` and ``inrdiag freeze-sweep`` do, as
functions a notebook can call (the CLI parses flags, calls one of these, renders the result).

- ``train_folder``: train a cohort on a folder (or a list) of images; under ``torchrun`` sharded
  over the ranks;
- ``sweep_folder``: a freeze sweep (or a study of several splits/seeds) on a folder: the held-out
  split, the cohort checkpoint found in the folder or given, or a cohort trained first;
- ``resolve_recipe``, ``split_images``, ``find_cohort_checkpoint``: the pieces.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..device import resolve_device
from ..progress import Progress
from ..seeds import check_seed
from ..study.distributed import launched_by_torchrun
from ..study.runner import JobProgress
from .freeze import SweepReport, freeze_sweep
from .recipe import DEFAULT_HOLDOUT, DEFAULT_SWEEP_STEPS, CohortError, CohortRecipe
from .train import CohortTrainResult, list_images, load_cohort, load_images, save_cohort, train_cohort

#: The recipe fields a checkpoint fixes (flags may only repeat them).
ARCH_FIELDS = ("backbone", "depth", "width", "shared_layers")


def resolve_recipe(base: CohortRecipe | None = None, *, backbone: str | None = None, depth: int | None = None,
                   width: int | None = None, shared_layers: int | None = None, size: int | None = None,
                   steps: int | None = None, lr: float | None = None, seed: int = 0) -> CohortRecipe:  # fmt: skip
    """The recipe of a run: the given fields over ``CohortRecipe``'s defaults (``shared_layers``
    defaults to ``depth``), or over ``base`` (a checkpoint's recipe: its architecture fields may only be
    repeated, ``size`` may change, ``seed`` is the run's)."""
    given: dict[str, Any] = {"backbone": backbone, "depth": depth, "width": width, "shared_layers": shared_layers,
                             "size": size, "steps": steps, "lr": lr}  # fmt: skip
    if base is None:
        kw = {k: v for k, v in given.items() if v is not None}
        kw.setdefault("shared_layers", kw.get("depth", CohortRecipe.depth))
        return CohortRecipe(seed=seed, **kw)
    for k in ARCH_FIELDS:
        if given[k] is not None and given[k] != getattr(base, k):
            flag = k.replace("_", "-")
            raise CohortError(f"the cohort checkpoint has {flag}={getattr(base, k)}, but --{flag} {given[k]} was "
                              "given; drop the flag or retrain")  # fmt: skip
    return replace(base, size=base.size if size is None else size, seed=seed)


def split_images(paths: list[Path], holdout: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, test) of one seeded split: ``holdout`` images drawn by ``random.Random(seed)``, each list
    sorted by name."""
    order = list(paths)
    random.Random(seed).shuffle(order)
    return sorted(order[holdout:]), sorted(order[:holdout])


def find_cohort_checkpoint(folder: str | Path) -> Path | None:
    """The one ``.safetensors`` file of ``folder`` (None when there is none; CohortError when several)."""
    found = sorted(Path(folder).glob("*.safetensors"))
    if len(found) > 1:
        raise CohortError(f"{folder} holds {len(found)} .safetensors files; choose one with --cohort")
    return found[0] if found else None


def train_folder(images: str | Path | list[Path], recipe: CohortRecipe, device: str = "auto",
                 progress: Progress | None = None) -> CohortTrainResult | None:  # fmt: skip
    """Train a cohort on a folder of images (other files are skipped and listed) or on a list of image
    files. Under ``torchrun`` the images and heads are sharded over the ranks (``train_cohort_sharded``);
    the result (with every head in ``.models``) is returned on rank 0, None on the other ranks."""
    if isinstance(images, (str, Path)):
        paths, other = list_images(images)
    else:
        paths, other = list(images), []
    notes = [f"{n} (not an image file)" for n in other]
    if launched_by_torchrun():
        from ..study import distributed as D
        from .train import train_cohort_sharded

        r = D.init_from_env(device)
        with D.group(r):
            res = train_cohort_sharded(paths, recipe, r, progress)
        if res is not None:
            res.skipped = notes + res.skipped
        return res
    from .train import check_training_memory

    check_training_memory(len(paths), recipe.size * recipe.size, 3, recipe, resolve_device(device))
    data = load_images(paths, recipe.size)
    data.skipped = notes + data.skipped
    return train_cohort(data, recipe, device=device, progress=progress)


@dataclass
class SweepRun:
    """What ``sweep_folder`` produced: a ``SweepReport`` (one sweep) or a ``FreezeStudy`` (several
    splits/seeds, or a run folder), or None when jobs are pending or on ranks other than 0."""

    report: Any
    #: The study runner's outcome (None for a sweep run here with its cohort kept, ``save``).
    outcome: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def main(self) -> bool:
        """Whether this process reports (rank 0)."""
        return self.outcome is None or bool(self.outcome.main)


def sweep_folder(
    folder: str | Path,
    *,
    test: str | Path | None = None,
    cohort: str | Path | None = None,
    holdout: int = DEFAULT_HOLDOUT,
    splits: int = 1,
    seeds: int = 1,
    steps: int = DEFAULT_SWEEP_STEPS,
    lr: float | None = None,
    recipe: dict[str, Any] | None = None,
    seed: int = 0,
    save: str | Path | None = None,
    force: bool = False,
    out: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    workers: int = 1,
    max_jobs: int | None = None,
    progress: Progress | None = None,
    train_progress: Progress | None = None,
    job_progress: JobProgress | None = None,
) -> SweepRun:
    """A freeze sweep on the images of ``folder``: the held-out images are ``test`` (a folder) or a
    seeded split of ``folder`` (``holdout`` images; ``splits`` splits drawn with seed + i); the encoder
    comes from ``cohort`` (a checkpoint; default: the one ``.safetensors`` in ``folder``), else a cohort is
    trained first on the split's other images (``recipe``: ``resolve_recipe`` fields, e.g.
    ``{"backbone": "ff", "steps": 500}``). ``save``: keep that cohort (one sweep only, run in this
    process; ``train_progress`` for its training, ``progress(fits done, fits, loss, PSNR)`` for its fits). Otherwise the sweep runs as a study
    (``out``: a resumable run folder; ``workers``/``max_jobs``/``threads``; ``job_progress`` is the
    study runner's ``on_job`` callback)."""
    from ..study import api

    seed = check_seed(seed, "seed (--seed)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CohortError(f"--steps must be >= 1, got {steps}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise CohortError(f"--lr must be a positive number, got {lr}")
    if splits < 1 or seeds < 1:
        raise CohortError(f"--splits and --seeds must be >= 1, got {splits} and {seeds}")
    if max_jobs is not None and out is None:
        raise CohortError("--max-jobs stops early; give --out RUN_DIR to keep the finished jobs")
    if out is not None and str(out).endswith(".safetensors"):
        raise CohortError(f"--out {out} names the run folder of a study; save the trained cohort with -o/--save FILE")
    study = splits > 1 or seeds > 1 or out is not None or workers > 1 or launched_by_torchrun()
    if save and study:
        raise CohortError("-o saves the cohort of a single sweep; with --splits/--seeds/--out/--jobs each job trains "
                          "its own cohort (not kept)")  # fmt: skip
    flags = dict(recipe or {})
    paths, other = list_images(folder)
    ckpt = Path(cohort) if cohort is not None else find_cohort_checkpoint(folder)
    notes = [f"skipped (not an image file): {', '.join(other)}"] if other else []
    if ckpt and save:
        raise CohortError("-o saves a cohort trained by this command; a checkpoint was given, so nothing is trained")
    if save:
        saved = _sweep_and_save(folder, paths, test, holdout, steps, lr, flags, seed, save, force, device,
                                train_progress, progress, notes)  # fmt: skip
        return SweepRun(report=saved, notes=notes)
    test_paths = list_images(test)[0] if test else None
    kw: dict[str, Any] = {}
    if ckpt:
        loaded = load_cohort(ckpt)
        rec = resolve_recipe(loaded.recipe, **{**flags, "steps": None, "lr": None}, seed=seed)
        kw = {"cohort": str(ckpt), "cohort_names": loaded.names}
    else:
        rec = resolve_recipe(**{**flags, "lr": None}, seed=seed)
    rep, outcome = api.freeze_folder(paths, rec, out=out, device=device, threads=threads, workers=workers,
                                     max_jobs=max_jobs, progress=job_progress, splits=splits, seeds=seeds,
                                     holdout=holdout, steps=steps, lr=lr, test=test_paths, **kw)  # fmt: skip
    if rep is not None:
        rep.notes = notes + rep.notes
    return SweepRun(report=rep, outcome=outcome, notes=notes)


def _sweep_and_save(folder: str | Path, paths: list[Path], test: str | Path | None, holdout: int, steps: int,
                    lr: float | None, flags: dict[str, Any], seed: int, save: str | Path, force: bool, device: str,
                    train_progress: Progress | None, progress: Progress | None,
                    notes: list[str]) -> SweepReport:  # fmt: skip
    """One sweep whose freshly trained cohort is kept (``save``): train here, then sweep, in this process."""
    rec = resolve_recipe(**{**flags, "lr": None}, seed=seed)
    if test:
        train_paths, test_paths = paths, list_images(test)[0]
    else:
        if len(paths) < 2:
            raise CohortError(f"{folder} holds {len(paths)} image(s); a sweep needs at least 2 (cohort + held-out)")
        if not 1 <= holdout < len(paths):
            raise CohortError(f"--holdout must be 1..{len(paths) - 1} for {len(paths)} images, got {holdout}")
        train_paths, test_paths = split_images(paths, holdout, seed)
    res = train_folder(train_paths, rec, device=device, progress=train_progress)
    assert res is not None  # not under torchrun (a study)
    notes.append(f"cohort trained here on {len(res.names)} images: mean PSNR {res.psnr_mean:.2f} dB")
    save_cohort(res.models, rec, res.names, save, provenance={"folder": str(Path(folder).resolve())}, force=force)
    notes.append(f"cohort saved to {save}")
    test_data = load_images(test_paths, rec.size, channels=res.models[0].spec.out_features)
    notes += [f"skipped: {s}" for s in test_data.skipped] + [f"converted: {s}" for s in test_data.resized]
    rep = freeze_sweep(res.models[0], rec, res.names, test_data, steps=steps, lr=lr, device=device, progress=progress,
                       seed=seed)  # fmt: skip
    rep.notes = notes + rep.notes
    return rep
