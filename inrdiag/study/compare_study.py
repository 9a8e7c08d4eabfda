"""``compare`` over a folder of signals: every (signal, init, seed) fitted with the same budget, then
per-signal tables, per-init summaries and paired statistics against a baseline init.

Aggregation (stated, and tested by hand on a tiny case):

- per signal and init: the mean over seeds of the final metric (``seed-averaged``);
- per init, **over signals**: mean, std (n-1) and 95% t-interval of the n seed-averaged values —
  the unit of replication is the signal, as in the papers' claims;
- per init, **over all runs**: the same over all n x seeds runs (runs of one signal are not
  independent, so this interval is narrower than it should be; it is shown for reference);
- **paired** against the baseline: the per-signal differences of seed-averaged values (see
  ``inrdiag.study.stats``): mean gain, its CI, paired t and Wilcoxon p-values, wins/ties/losses.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import InrdiagError
from ..fitting.loop import FitConfig
from ..fitting.targets import IMAGE_SUFFIXES, VOLUME_SUFFIXES
from ..seeds import check_seed
from .jobs import Job, fit_job, signal_ref
from .stats import Paired, Summary, paired, summarize

KIND = "compare"


def list_signals(folder: str | Path) -> tuple[list[Path], list[str]]:
    """Images or occupancy volumes of ``folder`` (sorted by name; one kind only) and the other files."""
    p = Path(folder)
    if not p.is_dir():
        raise InrdiagError(f"{p}: no such folder")
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    volumes = [f for f in files if f.suffix.lower() in VOLUME_SUFFIXES]
    if images and volumes:
        raise InrdiagError(f"{p} mixes images and occupancy volumes (metrics PSNR and IoU); give one kind per folder")
    signals = images or volumes
    if not signals:
        raise InrdiagError(f"{p} holds no images or .npy/.npz volumes")
    other = [f.name for f in files if f not in signals]
    return signals, other


def study_config(
    signals: list[dict[str, Any]], inits: list[str], seeds: int, config: FitConfig, size: int | None
) -> dict[str, Any]:
    """What makes a compare study (stored in RUN_DIR/study.json; a rerun must match it)."""
    fit = {k: v for k, v in config.to_dict().items() if k not in ("init", "seed", "device", "threads")}
    return {"signals": signals, "inits": list(inits), "seeds": seeds, "first_seed": config.seed, "size": size,
            "fit": fit}  # fmt: skip


def compare_jobs(
    signals: list[dict[str, Any]], inits: list[str], seeds: int, config: FitConfig, size: int | None
) -> list[Job]:
    """One fit job per (signal, init, seed), seeds ``config.seed + 0 .. seeds - 1``, signal-major; every one
    of them in [0, 2^32 - 1] (``inrdiag.seeds``)."""
    if seeds < 1:
        raise InrdiagError(f"--seeds must be >= 1, got {seeds}")
    check_seed(config.seed)
    check_seed(config.seed + seeds - 1, f"the last seed (--seed {config.seed} + --seeds {seeds} - 1)")
    if not inits:
        raise InrdiagError("no inits to compare")
    config.validate()
    return [fit_job(sig, size, replace(config, init=init, seed=config.seed + s).to_dict())
            for sig in signals for init in inits for s in range(seeds)]  # fmt: skip


def prepare(
    paths: list[Path], inits: list[str], seeds: int, config: FitConfig, size: int | None
) -> tuple[list[Job], dict[str, Any]]:
    """(jobs, study config) for these signal files."""
    refs = [signal_ref(p.resolve(), i) for i, p in enumerate(paths)]
    return compare_jobs(refs, inits, seeds, config, size), study_config(refs, inits, seeds, config, size)


@dataclass
class InitSummary:
    init: str
    over_signals: Summary
    over_runs: Summary
    heldout_over_signals: Summary | None
    inlet_effective_rank: float
    inlet_numerical_rank: float
    seconds_per_run: float

    def to_dict(self) -> dict[str, Any]:
        return {"init": self.init, "over_signals": self.over_signals.to_dict(), "over_runs": self.over_runs.to_dict(),
                "heldout_over_signals": None if self.heldout_over_signals is None else self.heldout_over_signals.to_dict(),
                "inlet_effective_rank_mean": self.inlet_effective_rank,
                "inlet_numerical_rank_mean": self.inlet_numerical_rank, "seconds_per_run": self.seconds_per_run}  # fmt: skip


@dataclass
class CompareStudy:
    """The report of a compare study, built from its records alone (``from_records``)."""

    config: dict[str, Any]
    metric_name: str
    signals: list[str]
    inits: list[str]
    seeds: list[int]
    baseline: str
    #: Every run: signal, init, seed, metric, heldout_metric, inlet ranks at init, seconds.
    runs: list[dict[str, Any]]
    #: signal -> init -> seed-averaged metric (and ``heldout`` the same for held-out points).
    per_signal: dict[str, dict[str, float]]
    per_signal_heldout: dict[str, dict[str, float]] | None
    inits_summary: list[InitSummary]
    paired: list[Paired]
    paired_heldout: list[Paired] | None
    run_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "compare-study", "config": self.config, "metric_name": self.metric_name, "signals": self.signals,
            "inits": self.inits, "seeds": self.seeds, "baseline": self.baseline,
            "per_signal": [{"signal": s, **{i: v for i, v in self.per_signal[s].items()}} for s in self.signals],
            "per_signal_heldout": None if self.per_signal_heldout is None else
            [{"signal": s, **self.per_signal_heldout[s]} for s in self.signals],
            "summary": [s.to_dict() for s in self.inits_summary], "paired": [p.to_dict() for p in self.paired],
            "paired_heldout": None if self.paired_heldout is None else [p.to_dict() for p in self.paired_heldout],
            "runs": self.runs, "run_dir": self.run_dir, "notes": self.notes,
        }  # fmt: skip

    def csv_rows(self) -> tuple[list[str], list[list[Any]]]:
        """One row per run (tidy), the layout pandas and R read directly."""
        head = ["signal", "init", "seed", "metric_name", "metric", "heldout_metric", "inlet_effective_rank",
                "inlet_numerical_rank", "seconds"]  # fmt: skip
        rows = [[r["signal"], r["init"], r["seed"], self.metric_name, r["metric"], r["heldout_metric"],
                 r["inlet_effective_rank"], r["inlet_numerical_rank"], r["seconds"]] for r in self.runs]  # fmt: skip
        return head, rows


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def from_records(config: dict[str, Any], records: dict[str, dict[str, Any]], baseline: str | None = None,
                 run_dir: str | None = None) -> CompareStudy:  # fmt: skip
    """Build the report of a compare study from its config and job records (every job finished)."""
    inits = list(config["inits"])
    baseline = baseline or ("default" if "default" in inits else inits[0])
    if baseline not in inits:
        raise InrdiagError(f"--baseline {baseline!r} is not one of the compared inits ({', '.join(inits)})")
    signals = [s["name"] for s in config["signals"]]
    seeds = [config["first_seed"] + s for s in range(config["seeds"])]
    runs: list[dict[str, Any]] = []
    metric_name = ""
    cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in sorted(records.values(), key=lambda r: r["key"]):
        job, res = rec["job"], rec["result"]
        metric_name = res["metric_name"]
        run = {"signal": job["signal"]["name"], "init": job["fit"]["init"], "seed": job["fit"]["seed"],
               "metric": res["metric"], "heldout_metric": res["heldout_metric"],
               "inlet_effective_rank": res["init_inlet"]["effective_rank"],
               "inlet_numerical_rank": res["init_inlet"]["numerical_rank"], "seconds": res["seconds"]}  # fmt: skip
        runs.append(run)
        cell.setdefault((run["signal"], run["init"]), []).append(run)
    missing = [(s, i) for s in signals for i in inits if len(cell.get((s, i), [])) != len(seeds)]
    if missing:
        raise InrdiagError(f"the study is incomplete ({len(runs)} of {len(signals) * len(inits) * len(seeds)} runs); "
                           "rerun the study command to finish it")  # fmt: skip
    heldout = all(r["heldout_metric"] is not None for r in runs)
    per_signal = {s: {i: _mean([r["metric"] for r in cell[(s, i)]]) for i in inits} for s in signals}
    per_ho = (
        {s: {i: _mean([r["heldout_metric"] for r in cell[(s, i)]]) for i in inits} for s in signals}
        if heldout
        else None
    )
    summaries: list[InitSummary] = []
    for i in inits:
        mine = [r for r in runs if r["init"] == i]
        summaries.append(InitSummary(
            i, summarize([per_signal[s][i] for s in signals]), summarize([r["metric"] for r in mine]),
            None if per_ho is None else summarize([per_ho[s][i] for s in signals]),
            _mean([r["inlet_effective_rank"] for r in mine]), _mean([r["inlet_numerical_rank"] for r in mine]),
            _mean([r["seconds"] for r in mine]),
        ))  # fmt: skip

    def pairs(table: dict[str, dict[str, float]]) -> list[Paired]:
        return [paired([table[s][i] for s in signals], [table[s][baseline] for s in signals], i, baseline)
                for i in inits if i != baseline]  # fmt: skip

    return CompareStudy(config, metric_name, signals, inits, seeds, baseline, runs, per_signal, per_ho, summaries,
                        pairs(per_signal), None if per_ho is None else pairs(per_ho), run_dir)  # fmt: skip
