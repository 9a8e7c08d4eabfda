"""Freeze-depth sweeps over several held-out splits and seeds, with paired statistics.

One job is one (split, seed): train a cohort on the split's training images with that seed (or use
a given cohort checkpoint), then the whole sweep (scratch, k = 0..K) on the split's held-out images
with that seed. Split i holds out ``holdout`` images chosen by ``random.Random(seed + i)`` (split 0
with one seed is exactly the split of a plain ``freeze-sweep``); replicate j uses seed ``seed + j``
for the cohort's init and the sweep's fits.

Paired comparisons, one unit per (split, held-out image), each value the mean over seeds of the
final PSNR:

- freeze at k* (each job's own stable-rank pick) against full fine-tuning (k = 0);
- k* against the measured best k of that job (best mean over its held-out images; chosen on the same
  images, so this comparison is optimistic for "best k" by construction);
- k* against training from scratch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cohort.recipe import DEFAULT_HOLDOUT, DEFAULT_SWEEP_STEPS, CohortRecipe
from ..errors import InrdiagError
from .jobs import Job, safe, signal_ref
from .stats import Paired, paired

KIND = "freeze-sweep"


def split(paths: list[Path], holdout: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, test) of one seeded split, each sorted by name (as a plain ``freeze-sweep``):
    ``inrdiag.cohort.folders.split_images``."""
    from ..cohort.folders import split_images

    return split_images(paths, holdout, seed)


def prepare(paths: list[Path], recipe: CohortRecipe, *, splits: int = 1, seeds: int = 1, holdout: int = DEFAULT_HOLDOUT,
            steps: int = DEFAULT_SWEEP_STEPS,
            lr: float | None = None, test: list[Path] | None = None, cohort: str | None = None,
            cohort_names: list[str] | None = None) -> tuple[list[Job], dict[str, Any]]:  # fmt: skip
    """(jobs, study config). ``test``: fixed held-out images (one split). ``cohort``: a cohort
    checkpoint whose training images are ``cohort_names`` (one split: the other images, or ``test``)."""
    from ..fitting.targets import file_sha256

    if splits < 1 or seeds < 1:
        raise InrdiagError(f"--splits and --seeds must be >= 1, got {splits} and {seeds}")
    if steps < 1:
        raise InrdiagError(f"--steps must be >= 1, got {steps}")
    if (test is not None or cohort is not None) and splits > 1:
        raise InrdiagError("--splits N draws held-out images from FOLDER; it cannot be used with --test or --cohort")
    base_seed = recipe.seed
    refs: dict[str, dict[str, Any]] = {}

    def ref(p: Path) -> dict[str, Any]:
        key = str(p.resolve())
        if key not in refs:
            refs[key] = signal_ref(p.resolve(), len(refs))
        return refs[key]

    #: (training images, held-out images, the cohort checkpoint's training image names or None)
    split_lists: list[tuple[list[Path], list[Path], list[str] | None]] = []
    for i in range(splits):
        if cohort is not None:
            known = [] if cohort_names is None else list(cohort_names)
            held = test if test is not None else [p for p in paths if p.name not in set(cohort_names or [])]
            split_lists.append(([], held, known))
        elif test is not None:
            split_lists.append((paths, test, None))
        else:
            if len(paths) < 2:
                raise InrdiagError(f"{len(paths)} image(s); a sweep needs at least 2 (cohort + held-out)")
            if not 1 <= holdout < len(paths):
                raise InrdiagError(f"--holdout must be 1..{len(paths) - 1} for {len(paths)} images, got {holdout}")
            split_lists.append((*split(paths, holdout, base_seed + i), None))
    if not split_lists[0][1]:
        raise InrdiagError("no held-out images: every image was in the cohort; give held-out images with --test DIR")
    ck = None if cohort is None else {"path": str(Path(cohort).resolve()), "sha256": file_sha256(cohort)}
    jobs = []
    for i, (tr, te, names) in enumerate(split_lists):
        for j in range(seeds):
            seed = base_seed + j
            images = [ref(p) for p in list(tr) + list(te)]
            cfg = {"kind": "freeze", "split": i, "seed": seed, "images": images,
                   "train": names if names is not None else [p.name for p in tr], "test": [p.name for p in te],
                   "recipe": {**recipe.to_dict(), "seed": seed}, "cohort": ck, "sweep": {"steps": steps, "lr": lr}}  # fmt: skip
            jobs.append(Job(f"freeze-split{i:03d}-seed{seed}-{safe(recipe.backbone)}", cfg))
    study = {"images": sorted(refs.values(), key=lambda r: r["index"]), "splits": splits, "seeds": seeds,
             "holdout": holdout, "recipe": recipe.to_dict(), "steps": steps, "lr": lr, "cohort": ck,
             "test": None if test is None else [p.name for p in test]}  # fmt: skip
    return jobs, study


@dataclass
class SplitRow:
    split: int
    test_images: list[str]
    seeds: list[int]
    k_star: list[int]
    best_k: list[int]
    #: Mean final PSNR over the split's held-out images, averaged over seeds.
    psnr_k_star: float
    psnr_full: float
    psnr_best: float
    psnr_scratch: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FreezeStudy:
    """A freeze-depth study over splits and seeds: a row per (split, seed) and the paired comparisons of
    the recommended depth k* against full fine-tuning, the measured best k and training from scratch."""

    config: dict[str, Any]
    rows: list[SplitRow]
    #: k* against full fine-tuning, against the measured best k, against scratch.
    paired: list[Paired]
    #: Jobs (split, seed) where k* equals the measured best k, of all jobs.
    agree: int
    jobs: int
    #: The sweep of every job, as ``SweepReport.to_dict()``.
    sweeps: list[dict[str, Any]]
    run_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "freeze-study", "config": self.config, "splits": [r.to_dict() for r in self.rows],
                "paired": [p.to_dict() for p in self.paired], "k_star_agrees_with_best": self.agree,
                "jobs": self.jobs, "sweeps": self.sweeps, "run_dir": self.run_dir, "notes": self.notes}  # fmt: skip


def _final(sweep: dict[str, Any], k: int | None) -> list[float]:
    row = next(r for r in sweep["rows"] if r["k"] == k)
    return row["psnr"][str(sweep["steps"])]


def from_records(config: dict[str, Any], records: dict[str, dict[str, Any]], run_dir: str | None = None) -> FreezeStudy:
    """The report of a freeze study from its job records (every job finished)."""
    want = config["splits"] * config["seeds"]
    if len(records) != want:
        raise InrdiagError(
            f"the study is incomplete ({len(records)} of {want} jobs); rerun the study command to finish it"
        )
    by_split: dict[int, list[dict[str, Any]]] = {}
    for rec in sorted(records.values(), key=lambda r: (r["job"]["split"], r["job"]["seed"])):
        by_split.setdefault(rec["job"]["split"], []).append(rec)
    rows: list[SplitRow] = []
    units: dict[str, list[float]] = {"k*": [], "full": [], "best": [], "scratch": []}
    agree = 0
    sweeps: list[dict[str, Any]] = []
    for i, recs in sorted(by_split.items()):
        test = recs[0]["result"]["test_images"]
        per: dict[str, list[float]] = {name: [] for name in units}  # per test image: mean over seeds
        vals: dict[str, list[list[float]]] = {name: [] for name in units}
        for rec in recs:
            sw = rec["result"]
            sweeps.append({"split": i, "seed": rec["job"]["seed"], **sw})
            ks, kb = sw["recommended_freeze_depth"], sw["measured_best_k"]
            agree += ks == kb
            vals["k*"].append(_final(sw, ks))
            vals["full"].append(_final(sw, 0))
            vals["best"].append(_final(sw, kb))
            vals["scratch"].append(_final(sw, None))
        for name in units:
            per[name] = [statistics.fmean(v[t] for v in vals[name]) for t in range(len(test))]
            units[name] += per[name]
        rows.append(SplitRow(split=i, test_images=test, seeds=[r["job"]["seed"] for r in recs],
                             k_star=[r["result"]["recommended_freeze_depth"] for r in recs],
                             best_k=[r["result"]["measured_best_k"] for r in recs],
                             psnr_k_star=statistics.fmean(per["k*"]), psnr_full=statistics.fmean(per["full"]),
                             psnr_best=statistics.fmean(per["best"]),
                             psnr_scratch=statistics.fmean(per["scratch"])))  # fmt: skip
    pairs = [paired(units["k*"], units[b], "freeze at k*", label)
             for b, label in (("full", "full fine-tuning (k=0)"), ("best", "measured best k"), ("scratch", "scratch"))]  # fmt: skip
    return FreezeStudy(config=config, rows=rows, paired=pairs, agree=agree, jobs=len(records), sweeps=sweeps,
                       run_dir=run_dir)  # fmt: skip
