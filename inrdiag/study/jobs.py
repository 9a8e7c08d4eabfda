"""What one job of a study is and how it runs.

A job is plain JSON (``Job.config``) that says everything its numbers depend on: the signal (path
and sha256), the resampling size, and the full fit config with its init and seed (``fit`` jobs), or
the cohort split, recipe and sweep settings (``freeze`` jobs). Where and how it runs (device, CPU
threads, rank) is not part of it: the same job gives the same numbers on one process or on any rank
(on the CPU; see docs/studies.md for CUDA). ``run_job`` returns the job's result as JSON.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InrdiagError

if TYPE_CHECKING:
    from ..fitting.targets import Target

#: Fields of FitConfig that say where a fit runs, not what it computes (left out of job configs).
EXECUTION_FIELDS = ("device", "threads")

#: on_step(job, step, steps, loss, metric): per-step progress of the job running in this process.
StepProgress = Callable[["Job", int, int, float, float], None]


@dataclass(frozen=True)
class Job:
    #: Unique, file-name safe; the record is RUN_DIR/jobs/<key>.json.
    key: str
    config: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def label(self) -> str:
        c = self.config
        if c["kind"] == "fit":
            return f"{c['signal']['name']} {c['fit']['init']} seed {c['fit']['seed']}"
        return f"split {c['split']} seed {c['seed']}"


def safe(name: str) -> str:
    """A file-name safe form of a signal name (keys stay unique: signals carry their index)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def signal_ref(path: Path, index: int) -> dict[str, Any]:
    from ..fitting.targets import file_sha256

    return {"index": index, "name": path.name, "path": str(path), "sha256": file_sha256(path)}


def fit_job(signal: dict[str, Any], size: int | None, fit_config: dict[str, Any]) -> Job:
    cfg = {k: v for k, v in fit_config.items() if k not in EXECUTION_FIELDS}
    key = f"fit-{signal['index']:04d}-{safe(Path(signal['name']).stem)}-{safe(cfg['init'])}-seed{cfg['seed']}"
    return Job(key, {"kind": "fit", "signal": signal, "size": size, "fit": cfg})


def run_job(job: Job, device: str = "cpu", threads: int | None = None,
            on_step: StepProgress | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``job`` and return its result (JSON-able dict)."""
    if job.kind == "fit":
        return _run_fit(job, device, threads, on_step)
    if job.kind == "freeze":
        return _run_freeze(job, device, threads)
    raise InrdiagError(f"unknown job kind {job.kind!r}")  # pragma: no cover


def _load_signal(signal: dict[str, Any], size: int | None) -> Target:
    from ..fitting.targets import load_target

    tgt = load_target(signal["path"], size)
    if tgt.sha256 != signal["sha256"]:
        raise InrdiagError(f"{signal['path']} changed since the study was set up (sha256 differs); "
                           "restore it or start a new --out")  # fmt: skip
    return tgt


def _run_fit(job: Job, device: str, threads: int | None, on_step: StepProgress | None) -> dict[str, Any]:
    from ..fitting.loop import FitConfig, fit

    c = job.config
    tgt = _load_signal(c["signal"], c["size"])
    cfg = FitConfig(**{**c["fit"], "device": device, "threads": threads})
    cb = None if on_step is None else (lambda st, n, lo, m: on_step(job, st, n, lo, m))
    r = fit(tgt, cfg, cb)
    return {
        "metric_name": r.metric_name, "metric": r.metric, "heldout_metric": r.heldout_metric,
        "full_metric": r.full_metric, "final_loss": r.final_loss,
        "init_inlet": {"effective_rank": r.init_inlet_effective_rank, "numerical_rank": r.init_inlet_numerical_rank},
        "seconds": r.seconds, "steps_per_second": r.steps_per_second, "parameters": r.parameters,
        "batch_size": r.batch_size, "train_points": r.train_points, "target": r.target,
        "curve": {"step": r.curve_step, "loss": r.curve_loss, "metric": r.curve_metric}, "notes": r.notes,
    }  # fmt: skip


def _run_freeze(job: Job, device: str, threads: int | None) -> dict[str, Any]:
    import torch

    from ..cohort.freeze import freeze_sweep
    from ..cohort.train import CohortRecipe, load_cohort, load_images, train_cohort
    from ..fitting.targets import file_sha256

    c = job.config
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        recipe = CohortRecipe(**c["recipe"])
        images = {s["name"]: s for s in c["images"]}
        for s in c["images"]:
            if file_sha256(s["path"]) != s["sha256"]:
                raise InrdiagError(f"{s['path']} changed since the study was set up (sha256 differs); "
                                   "restore it or start a new --out")  # fmt: skip
        notes: list[str] = []
        cohort_psnr = None
        if c.get("cohort"):
            ck = c["cohort"]
            if file_sha256(ck["path"]) != ck["sha256"]:
                raise InrdiagError(f"{ck['path']} changed since the study was set up (sha256 differs)")
            models = load_cohort(ck["path"]).models
            notes.append(f"encoder from {ck['path']}")
        else:
            data = load_images([Path(images[n]["path"]) for n in c["train"]], recipe.size)
            res = train_cohort(data, recipe, device=device)
            models = res.models
            cohort_psnr = res.psnr_mean
            notes.append(f"cohort trained on {len(res.names)} images: mean PSNR {cohort_psnr:.2f} dB")
        test = load_images([Path(images[n]["path"]) for n in c["test"]], recipe.size,
                           channels=models[0].spec.out_features)  # fmt: skip
        notes += [f"converted: {s}" for s in test.resized]
        rep = freeze_sweep(models[0], recipe, list(c["train"]), test, steps=c["sweep"]["steps"],
                           lr=c["sweep"]["lr"], device=device, seed=c["seed"])  # fmt: skip
        rep.notes = notes + rep.notes
        return {**rep.to_dict(), "cohort_psnr_mean": cohort_psnr}
    finally:
        torch.set_num_threads(before)
