"""The Python entry points of studies (what the CLI calls): run a study, or rebuild its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from ..cohort.freeze import SweepReport
from ..cohort.train import CohortRecipe
from ..errors import InrdiagError
from ..fitting.loop import FitConfig
from ..seeds import check_seed
from . import compare_study as CS
from . import freeze_study as FS
from .jobs import StepProgress
from .rundir import RunDir
from .runner import JobProgress, Outcome, run_study
from .single import CompareResult, result_from_records

#: What a study's report is: a compare over several signals or one, a freeze study or one sweep.
StudyReport: TypeAlias = CS.CompareStudy | CompareResult | FS.FreezeStudy | SweepReport


def compare_folder(
    signals: str | Path | list[str | Path],
    inits: list[str],
    seeds: int = 3,
    config: FitConfig | None = None,
    *,
    baseline: str | None = None,
    size: int | None = None,
    out: str | None = None,
    workers: int = 1,
    max_jobs: int | None = None,
    progress: JobProgress | None = None,
    on_step: StepProgress | None = None,
) -> tuple[CS.CompareStudy | CompareResult | None, Outcome]:
    """Fit every (signal, init, seed) of a folder (or a list of files) and report.

    Returns ``(report, outcome)``: the report is a ``CompareStudy`` (a ``CompareResult`` for a single
    signal, the table of ``inrdiag compare FILE``), or None when jobs are still pending (``max_jobs``)
    or on a rank other than 0. ``config.seed`` is the first seed: seeds ``config.seed .. config.seed + seeds - 1``,
    each in [0, 2^32 - 1] (``inrdiag.seeds``).
    """
    cfg = config or FitConfig()
    if isinstance(signals, (str, Path)) and Path(signals).is_dir():
        paths, _ = CS.list_signals(signals)
    else:
        paths = [Path(p) for p in ([signals] if isinstance(signals, (str, Path)) else signals)]
        for p in paths:
            if not p.is_file():
                raise InrdiagError(f"{p}: no such file")
    jobs, study = CS.prepare(paths, inits, seeds, cfg, size)
    outcome = run_study(jobs, CS.KIND, study, out, device=cfg.device, threads=cfg.threads, workers=workers,
                        max_jobs=max_jobs, on_job=progress, on_step=on_step)  # fmt: skip
    rep = report(CS.KIND, study, outcome, baseline)
    assert rep is None or isinstance(rep, (CS.CompareStudy, CompareResult))
    return rep, outcome


def freeze_folder(paths: list[Path], recipe: CohortRecipe, *, out: str | None = None, device: str = "auto",
                  threads: int | None = None, workers: int = 1, max_jobs: int | None = None,
                  progress: JobProgress | None = None, **prepare_kw: Any) -> tuple[FS.FreezeStudy | SweepReport | None, Outcome]:  # fmt: skip
    """Run a freeze-sweep study (see ``freeze_study.prepare`` for the split options) and report.

    ``recipe.seed`` is the first seed (in [0, 2^32 - 1]: ``inrdiag.seeds``)."""
    check_seed(recipe.seed, "recipe.seed")
    jobs, study = FS.prepare(paths, recipe, **prepare_kw)
    outcome = run_study(jobs, FS.KIND, study, out, device=device, threads=threads, workers=workers,
                        max_jobs=max_jobs, on_job=progress)  # fmt: skip
    rep = report(FS.KIND, study, outcome)
    assert rep is None or isinstance(rep, (FS.FreezeStudy, SweepReport))
    return rep, outcome


def report(kind: str, study: dict[str, Any], outcome: Outcome, baseline: str | None = None) -> StudyReport | None:
    """The report of a finished study (None if jobs are pending or on ranks other than 0)."""
    if not outcome.main or not outcome.complete or outcome.records is None:
        return None
    return build(kind, study, outcome.records, baseline, outcome.run_dir)


def build(kind: str, study: dict[str, Any], records: dict[str, dict[str, Any]], baseline: str | None = None,
          run_dir: str | None = None) -> StudyReport:  # fmt: skip
    """The report of a study of ``kind`` from its config and the records of its (finished) jobs."""
    if kind == CS.KIND:
        if len(study["signals"]) == 1:
            if baseline is not None and baseline not in study["inits"]:
                raise InrdiagError(
                    f"--baseline {baseline!r} is not one of the compared inits ({', '.join(study['inits'])})"
                )
            return result_from_records(study, records)
        return CS.from_records(study, records, baseline, run_dir)
    if kind == FS.KIND:
        if study["splits"] * study["seeds"] == 1 and len(records) == 1:
            return SweepReport.from_dict(next(iter(records.values()))["result"])
        return FS.from_records(study, records, run_dir)
    raise InrdiagError(f"unknown study kind {kind!r}")  # pragma: no cover


def load_study(run_dir: str | Path, baseline: str | None = None) -> tuple[str, StudyReport]:
    """Rebuild a study's report from its run folder alone (``inrdiag compare --from RUN_DIR``)."""
    rd = RunDir.load(run_dir)
    return rd.kind, build(rd.kind, rd.config, rd.records(), baseline, str(run_dir))
