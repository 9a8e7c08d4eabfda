"""The same fit of one target under several inlet schemes and seeds: one table of metric mean ± std and inlet
rank (``inrdiag compare FILE``). Folders of signals: ``compare_study``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from ..errors import InrdiagError
from ..fitting.defaults import DEFAULT_SEEDS
from ..fitting.loop import FitConfig, FitResult, fit
from ..fitting.targets import Target


@dataclass
class CompareRow:
    init: str
    seeds: list[int]
    metrics: list[float]
    heldout_metrics: list[float] | None
    #: Inlet effective / numerical rank at initialisation on the target grid, per seed.
    inlet_effective_rank: list[float]
    inlet_numerical_rank: list[int]
    seconds: list[float]
    parameters: int
    #: Per seed, the target's own evaluation (FitResult.details: dense held-out IoU, per-frame PSNR, SNR).
    details: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def _mean_std(xs: list[float]) -> tuple[float, float]:
        finite = [x for x in xs if math.isfinite(x)]
        if not finite:
            return math.nan, math.nan
        return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0

    @property
    def mean_std(self) -> tuple[float, float]:
        return self._mean_std(self.metrics)

    @property
    def heldout_mean_std(self) -> tuple[float, float] | None:
        return None if self.heldout_metrics is None else self._mean_std(self.heldout_metrics)

    def to_dict(self) -> dict[str, Any]:
        mean, std = self.mean_std
        ho = self.heldout_mean_std
        return {
            "init": self.init, "seeds": self.seeds, "metrics": self.metrics, "mean": mean, "std": std,
            "heldout_metrics": self.heldout_metrics, "heldout_mean": None if ho is None else ho[0],
            "heldout_std": None if ho is None else ho[1],
            "inlet_effective_rank": self.inlet_effective_rank,
            "inlet_effective_rank_mean": statistics.fmean(self.inlet_effective_rank),
            "inlet_numerical_rank": self.inlet_numerical_rank, "seconds": self.seconds,
            "parameters": self.parameters, "details": self.details,
        }  # fmt: skip


@dataclass
class CompareResult:
    """Inits compared on one target: a row per (init, seed) with its final and held-out metric, loss
    and speed, under one ``FitConfig``."""

    target: dict[str, Any]
    config: FitConfig
    metric_name: str
    rows: list[CompareRow]
    #: The loss/metric curves of every run, by init, in seed order (for --plot).
    curves: dict[str, list[dict[str, list]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config.to_dict()
        cfg.pop("init")
        return {"target": self.target, "config": cfg, "metric_name": self.metric_name,
                "rows": [r.to_dict() for r in self.rows], "curves": self.curves}  # fmt: skip


#: progress(init, seed, step, steps, loss, metric)
CompareProgress = Callable[[str, int, int, int, float, float], None]


def compare(target: Target, inits: list[str], seeds: int = DEFAULT_SEEDS, config: FitConfig | None = None,
            progress: CompareProgress | None = None,
            model_factory: Callable[[int], nn.Module] | None = None) -> CompareResult:  # fmt: skip
    """Fit ``target`` once per (init, seed) with the same budget (``config`` minus its init).

    Seeds are ``config.seed, config.seed + 1, ...``. Every run gets the same depth, width, steps,
    learning rate and batch; only the scheme (and what it changes: activation, encoding, batch
    norm) differs. ``model_factory(seed)``: a fresh module of the user's own (``--model-code``) for each
    run instead of inrdiag's MLP; its inits are then "keep" (as built) or an inlet scheme.
    """
    if seeds < 1:
        raise InrdiagError(f"--seeds must be >= 1, got {seeds}")
    if not inits:
        raise InrdiagError("no inits to compare")
    base = config or FitConfig()
    rows: list[CompareRow] = []
    curves: dict[str, list[dict[str, list]]] = {}
    metric_name = ""
    for init in inits:
        results: list[FitResult] = []
        for s in range(seeds):
            seed = base.seed + s
            cb = None if progress is None else (lambda st, n, lo, m, i=init, sd=seed: progress(i, sd, st, n, lo, m))
            model = None if model_factory is None else model_factory(seed)
            results.append(fit(target, replace(base, init=init, seed=seed), cb, model=model))
        metric_name = results[0].metric_name
        heldout = None if results[0].heldout_metric is None else [_float(r.heldout_metric) for r in results]
        rows.append(CompareRow(
            init=init, seeds=[r.config.seed for r in results], metrics=[r.metric for r in results],
            heldout_metrics=heldout, inlet_effective_rank=[r.init_inlet_effective_rank for r in results],
            inlet_numerical_rank=[r.init_inlet_numerical_rank for r in results],
            seconds=[r.seconds for r in results], parameters=results[0].parameters,
            details=[r.details for r in results],
        ))  # fmt: skip
        curves[init] = [{"step": r.curve_step, "loss": r.curve_loss, "metric": r.curve_metric} for r in results]
    return CompareResult(target.to_dict(), replace(base), metric_name, rows, curves)


def _float(x: float | None) -> float:
    return math.nan if x is None else x


def result_from_records(config: dict[str, Any], records: dict[str, dict[str, Any]]) -> CompareResult:
    """The one-target ``CompareResult`` of a compare study over a single signal, from its job records
    (the same table and JSON as ``compare``: each job is the same seeded fit)."""
    inits = list(config["inits"])
    seeds = [config["first_seed"] + s for s in range(config["seeds"])]
    by = {(r["job"]["fit"]["init"], r["job"]["fit"]["seed"]): r for r in records.values()}
    missing = [(i, s) for i in inits for s in seeds if (i, s) not in by]
    if missing:
        raise InrdiagError(f"the study is incomplete ({len(by)} of {len(inits) * len(seeds)} runs); "
                           "rerun the study command to finish it")  # fmt: skip
    rows, curves, target, metric_name, fit_cfg = [], {}, {}, "", {}
    for init in inits:
        res = [by[(init, s)]["result"] for s in seeds]
        target, metric_name = res[0]["target"], res[0]["metric_name"]
        fit_cfg = {k: v for k, v in by[(init, seeds[0])]["job"]["fit"].items() if k in FitConfig.__dataclass_fields__}
        heldout = None if res[0]["heldout_metric"] is None else [r["heldout_metric"] for r in res]
        rows.append(CompareRow(
            init=init, seeds=seeds, metrics=[r["metric"] for r in res], heldout_metrics=heldout,
            inlet_effective_rank=[r["init_inlet"]["effective_rank"] for r in res],
            inlet_numerical_rank=[r["init_inlet"]["numerical_rank"] for r in res],
            seconds=[r["seconds"] for r in res], parameters=res[0]["parameters"],
        ))  # fmt: skip
        curves[init] = [r["curve"] for r in res]
    cfg = FitConfig(**{**fit_cfg, "seed": config["first_seed"]})
    return CompareResult(target, cfg, metric_name, rows, curves)
