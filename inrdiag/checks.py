"""``inrdiag check``: thresholds on rank diagnostics, for CI gates (exit 1 when any fails).

Thresholds come from flags or from a policy file (TOML or JSON); flags win. A policy file may be
a ``pyproject.toml`` with a ``[tool.inrdiag.check]`` table, a TOML/JSON file with a ``check``
table, or a flat table of the keys in ``CheckPolicy``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InrdiagError


@dataclass
class CheckPolicy:
    """Thresholds; ``None`` leaves a check out."""

    #: Inlet (first hidden layer) effective rank / min(N, width) must be at least this.
    min_inlet_effective_rank_fraction: float | None = None
    #: Inlet numerical rank / min(N, width) must be at least this.
    min_inlet_numerical_rank_fraction: float | None = None
    #: Every hidden-to-hidden weight matrix must have at least this stable rank.
    min_weight_stable_rank: float | None = None
    #: No hidden layer may have more than this fraction of units dead on the grid (ReLU-like only).
    max_dead_fraction: float | None = None
    #: Fail when any weight is NaN/Inf (on unless set to true).
    allow_nonfinite: bool = False
    #: Grid points per axis and rank tolerance used for the spectra (None: rank's defaults).
    grid: int | None = None
    tol: float | None = None

    def __post_init__(self) -> None:
        for f in ("min_inlet_effective_rank_fraction", "min_inlet_numerical_rank_fraction", "max_dead_fraction"):
            v = getattr(self, f)
            if v is not None and not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise InrdiagError(f"{f} must be a number in [0, 1], got {v!r}")
        v = self.min_weight_stable_rank
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise InrdiagError(f"min_weight_stable_rank must be a number >= 0, got {v!r}")
        if not isinstance(self.allow_nonfinite, bool):
            raise InrdiagError(f"allow_nonfinite must be true or false, got {self.allow_nonfinite!r}")

    def merged(self, **flags: Any) -> CheckPolicy:
        """This policy with every non-None flag value replacing the file's."""
        return dataclasses.replace(self, **{k: v for k, v in flags.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_policy(path: str | Path) -> CheckPolicy:
    p = Path(path)
    if not p.is_file():
        raise InrdiagError(f"policy file {p} not found")
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InrdiagError(f"policy file {p}: invalid JSON ({exc})") from None
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InrdiagError(f"policy file {p}: invalid TOML ({exc}); use .json for JSON") from None
    if not isinstance(data, dict):
        raise InrdiagError(f"policy file {p} must hold a table/object")
    if isinstance(data.get("tool"), dict) and "inrdiag" in data["tool"]:
        data = data["tool"]["inrdiag"].get("check", {})
    elif isinstance(data.get("check"), dict):
        data = data["check"]
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    allowed = {f.name for f in dataclasses.fields(CheckPolicy)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InrdiagError(f"policy file {p}: unknown keys {unknown}; allowed: {', '.join(sorted(allowed))}")
    return CheckPolicy(**data)


@dataclass
class CheckRow:
    name: str
    value: float | None
    op: str
    threshold: float | None
    #: True pass, False fail, None not applicable (see detail).
    passed: bool | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CheckReport:
    policy: CheckPolicy
    rows: list[CheckRow]
    rank: Any = None  # RankReport, when the spectra could be computed
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.rows)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "policy": self.policy.to_dict(),
            "checks": [r.to_dict() for r in self.rows],
            "rank": None if self.rank is None else self.rank.to_dict(),
            "notes": self.notes,
        }


def run_checks(loaded, policy: CheckPolicy, device: str = "auto", in_features: int | None = None) -> CheckReport:
    """Evaluate ``policy`` on a loaded model (``inrdiag.load``'s result), any ``nn.Module`` mapping (N, d)
    coordinates to (N, C) (``in_features`` = d when it cannot tell) or a ``ModuleAdapter``.

    The inlet is the first layer with a representation; hidden-to-hidden weights are all linear layers
    but the first and the last called."""
    from .adapter import as_adapter
    from .spectra import DEFAULT_TOL, rank_report

    rows: list[CheckRow] = []
    notes: list[str] = []
    ad = as_adapter(loaded, in_features=in_features)
    bad = getattr(loaded, "nonfinite", None)
    if bad is None:
        bad = [k for k, v in ad.module.state_dict().items()
               if (v.is_floating_point() or v.is_complex()) and not bool(v.isfinite().all())]  # fmt: skip
    rows.append(CheckRow("non-finite weights", float(len(bad)), "==", 0.0,
                         True if not bad or policy.allow_nonfinite else False,
                         ", ".join(bad[:4]) + (" ..." if len(bad) > 4 else "")))  # fmt: skip
    spectral = [policy.min_inlet_effective_rank_fraction, policy.min_inlet_numerical_rank_fraction,
                policy.min_weight_stable_rank, policy.max_dead_fraction]  # fmt: skip
    if all(v is None for v in spectral):
        notes.append("no rank thresholds set: only non-finite weights were checked")
        return CheckReport(policy, rows, None, notes)
    if bad:
        for name in _spectral_names(policy):
            rows.append(CheckRow(name, None, "", None, None, "not evaluated: weights are not finite"))
        return CheckReport(policy, rows, None, notes)
    rep = rank_report(ad, grid=policy.grid, tol=policy.tol or DEFAULT_TOL, device=device)
    inlet = next(layer.representation for layer in rep.layers if layer.representation is not None)
    if policy.min_inlet_effective_rank_fraction is not None:
        v = inlet.effective_rank_fraction
        rows.append(CheckRow("inlet effective-rank fraction", v, ">=", policy.min_inlet_effective_rank_fraction,
                             v >= policy.min_inlet_effective_rank_fraction,
                             f"{inlet.effective_rank:.1f} of {inlet.max_rank}"))  # fmt: skip
    if policy.min_inlet_numerical_rank_fraction is not None:
        v = inlet.numerical_rank_fraction
        rows.append(CheckRow("inlet numerical-rank fraction", v, ">=", policy.min_inlet_numerical_rank_fraction,
                             v >= policy.min_inlet_numerical_rank_fraction,
                             f"{inlet.numerical_rank} of {inlet.max_rank} (tol {rep.tol:g})"))  # fmt: skip
    if policy.min_weight_stable_rank is not None:
        inner = rep.layers[1:-1]
        if not inner:
            rows.append(CheckRow("min weight stable rank", None, ">=", policy.min_weight_stable_rank, None,
                                 "no hidden-to-hidden layers"))  # fmt: skip
        else:
            worst = min(inner, key=lambda layer: layer.weight_stable_rank)
            v = worst.weight_stable_rank
            rows.append(CheckRow("min weight stable rank", v, ">=", policy.min_weight_stable_rank,
                                 v >= policy.min_weight_stable_rank, f"layer {worst.index} ({worst.name})"))  # fmt: skip
    if policy.max_dead_fraction is not None:
        reps = [(layer, layer.representation) for layer in rep.layers if layer.representation is not None]
        if reps[0][1].dead_units is None:
            rows.append(CheckRow("max dead-unit fraction", None, "<=", policy.max_dead_fraction, None,
                                 f"'{rep.activation}' units cannot be dead (not ReLU-like)"))  # fmt: skip
        else:
            layer, r = max(reps, key=lambda lr: lr[1].dead_units / lr[1].width)
            v = r.dead_units / r.width
            rows.append(CheckRow("max dead-unit fraction", v, "<=", policy.max_dead_fraction,
                                 v <= policy.max_dead_fraction,
                                 f"{r.dead_units} of {r.width} in layer {layer.index}"))  # fmt: skip
    for r in rows:
        if r.value is not None and isinstance(r.value, float) and math.isnan(r.value):
            r.passed = False
    return CheckReport(policy, rows, rep, notes)


def _spectral_names(policy: CheckPolicy) -> list[str]:
    pairs = [
        (policy.min_inlet_effective_rank_fraction, "inlet effective-rank fraction"),
        (policy.min_inlet_numerical_rank_fraction, "inlet numerical-rank fraction"),
        (policy.min_weight_stable_rank, "min weight stable rank"),
        (policy.max_dead_fraction, "max dead-unit fraction"),
    ]
    return [name for v, name in pairs if v is not None]
