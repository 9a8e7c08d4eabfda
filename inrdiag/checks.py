"""``inrdiag check``: thresholds on rank diagnostics, for CI gates (exit 1 when any fails).

Thresholds come from flags or from a policy file (TOML or JSON); flags win. A policy file may be
a ``pyproject.toml`` with a ``[tool.inrdiag.check]`` table, a TOML/JSON file with a ``check``
table, or a flat table of the keys in ``CheckPolicy``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InrdiagError
from .files import user_path
from .models.adapter import as_adapter
from .spectra import DEFAULT_TOL, RankReport, SpectrumStats, rank_report

#: The file name searched for (cwd upward) when ``check`` is given no ``--policy``.
PYPROJECT = "pyproject.toml"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: Every threshold field: (what is allowed, test).
_RULES: dict[str, tuple[str, Any]] = {
    "min_inlet_effective_rank_fraction": ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "min_inlet_numerical_rank_fraction": ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "min_weight_stable_rank": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "max_dead_fraction": ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "allow_nonfinite": ("true or false", lambda v: isinstance(v, bool)),
    "grid": ("an integer >= 2 (points per axis)", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2),
    "tol": ("a number > 0 (e.g. 1e-3)", lambda v: _number(v) and v > 0),
}


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
    #: Grid points per axis and rank tolerance used for the spectra (None: rank's defaults). A tolerance of 0
    #: is refused, not replaced by the default: every singular value would count, and it once silently did not.
    grid: int | None = None
    tol: float | None = None
    #: The policy file these thresholds were read from (None: flags and defaults only). Not a threshold.
    source: str | None = None

    def __post_init__(self) -> None:
        for name, (allowed, ok) in _RULES.items():
            v = getattr(self, name)
            if (v is not None or name == "allow_nonfinite") and not ok(v):
                flag = "--" + name.replace("_", "-")
                raise InrdiagError(f"policy {name} ({flag}) must be {allowed}, got {v!r}")
        if self.source is not None and not isinstance(self.source, str):
            raise InrdiagError(f"policy source must be a file path (str) or None, got {self.source!r}")

    def merged(self, **flags: Any) -> CheckPolicy:
        """This policy with every non-None flag value replacing the file's."""
        return dataclasses.replace(self, **{k: v for k, v in flags.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Keys a policy table may hold (``-`` or ``_`` spelling).
POLICY_KEYS = tuple(_RULES)


def find_policy(start: str | Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` from ``start`` (default: the working folder) upward, or None."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here.resolve(), *here.resolve().parents):
        candidate = folder / PYPROJECT
        if candidate.is_file():
            return candidate
    return None


def default_policy(start: str | Path | None = None) -> CheckPolicy:
    """The ``[tool.inrdiag.check]`` table of the nearest ``pyproject.toml`` (``find_policy``); an empty policy
    when there is none or it has no such table. ``source`` says which file was used."""
    found = find_policy(start)
    if found is None:
        return CheckPolicy()
    data = _parse(found)
    tool = data.get("tool")
    if not isinstance(tool, dict) or "inrdiag" not in tool:
        return CheckPolicy()
    table = _tool_table(tool, found)
    return CheckPolicy() if table is None else _policy(table, found)


def read_policy(path: str | Path) -> CheckPolicy:
    """Thresholds from a policy file: a ``pyproject.toml``'s ``[tool.inrdiag.check]``, a TOML/JSON ``check``
    table, or a flat table of ``POLICY_KEYS``. Keys may be spelt with ``-`` or ``_`` (not both for one key)."""
    p = user_path(path, "policy file")
    if not p.is_file():
        raise InrdiagError(f"policy file {p} not found")
    data = _parse(p)
    tool = data.get("tool")
    if isinstance(tool, dict) and "inrdiag" in tool:
        table = _tool_table(tool, p)
        if table is None:
            raise InrdiagError(f"policy file {p}: [tool.inrdiag] has no check table; add [tool.inrdiag.check]")
    elif p.name == PYPROJECT and "check" not in data:
        raise InrdiagError(f"policy file {p}: no [tool.inrdiag.check] table")
    elif "check" in data:
        table = data["check"]
        if not isinstance(table, dict):
            raise InrdiagError(f"policy file {p}: 'check' must be a table/object of thresholds, got {table!r}")
    else:
        table = data
    return _policy(table, p)


def _parse(p: Path) -> dict[str, Any]:
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InrdiagError(f"policy file {p}: cannot read it ({exc.strerror or exc})") from None
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InrdiagError(f"policy file {p}: invalid JSON ({str(exc)[:120]})") from None
    elif sys.version_info >= (3, 11):
        import tomllib

        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            raise InrdiagError(f"policy file {p}: invalid TOML ({str(exc)[:120]}); use .json for JSON") from None
    else:  # tomllib is new in Python 3.11
        raise InrdiagError(f"policy file {p}: reading TOML needs Python 3.11 or newer; use a .json policy")
    if not isinstance(data, dict):
        raise InrdiagError(f"policy file {p} must hold a table/object, got {type(data).__name__}")
    return data


def _tool_table(tool: dict[str, Any], p: Path) -> dict[str, Any] | None:
    ours = tool["inrdiag"]
    if not isinstance(ours, dict):
        raise InrdiagError(f"policy file {p}: [tool.inrdiag] must be a table, got {ours!r}")
    if "check" not in ours:
        return None
    table = ours["check"]
    if not isinstance(table, dict):
        raise InrdiagError(f"policy file {p}: [tool.inrdiag.check] must be a table of thresholds, got {table!r}")
    return table


def _policy(table: dict[str, Any], p: Path) -> CheckPolicy:
    data: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if name in spelt:
            raise InrdiagError(f"policy file {p}: {spelt[name]!r} and {key!r} are one key spelt twice; keep one")
        spelt[name] = str(key)
        data[name] = value
    unknown = sorted(set(data) - set(POLICY_KEYS))
    if unknown:
        raise InrdiagError(f"policy file {p}: unknown keys {unknown}; allowed: {', '.join(POLICY_KEYS)}")
    try:
        return CheckPolicy(**data, source=str(p))
    except InrdiagError as exc:
        raise InrdiagError(f"policy file {p}: {exc}") from None


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
    #: The rank report, when the spectra could be computed.
    rank: RankReport | None = None
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


def run_checks(loaded: Any, policy: CheckPolicy, device: str = "auto", in_features: int | None = None) -> CheckReport:
    """Evaluate ``policy`` on a loaded model (``inrdiag.load``'s result), any ``nn.Module`` mapping (N, d)
    coordinates to (N, C) (``in_features`` = d when it cannot tell) or a ``ModuleAdapter``.

    The inlet is the first layer with a representation; hidden-to-hidden weights are all linear layers
    but the first and the last called."""
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
        if reps[0][1].dead_units is None or reps[0][1].width is None:
            rows.append(CheckRow("max dead-unit fraction", None, "<=", policy.max_dead_fraction, None,
                                 f"'{rep.activation}' units cannot be dead (not ReLU-like)"))  # fmt: skip
        else:
            layer, r = max(reps, key=lambda lr: _dead_fraction(lr[1]))
            v = _dead_fraction(r)
            rows.append(CheckRow("max dead-unit fraction", v, "<=", policy.max_dead_fraction,
                                 v <= policy.max_dead_fraction,
                                 f"{r.dead_units} of {r.width} in layer {layer.index}"))  # fmt: skip
    for row in rows:
        if row.value is not None and isinstance(row.value, float) and math.isnan(row.value):
            row.passed = False
    return CheckReport(policy, rows, rep, notes)


def _dead_fraction(s: SpectrumStats) -> float:
    """Dead units / width of one representation (a ReLU-like layer's, where both are set)."""
    if s.dead_units is None or s.width is None:
        raise InrdiagError("dead units are counted only for ReLU-like representations")  # pragma: no cover
    return s.dead_units / s.width


def _spectral_names(policy: CheckPolicy) -> list[str]:
    pairs = [
        (policy.min_inlet_effective_rank_fraction, "inlet effective-rank fraction"),
        (policy.min_inlet_numerical_rank_fraction, "inlet numerical-rank fraction"),
        (policy.min_weight_stable_rank, "min weight stable rank"),
        (policy.max_dead_fraction, "max dead-unit fraction"),
    ]
    return [name for v, name in pairs if v is not None]
