"""Shared rendering helpers: consoles, JSON output, number formats, safe figure saving."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


#: Version of the JSON layout every command prints (and of JSON written to files): raised when a key is
#: renamed or removed or its meaning changes; adding keys keeps it.
SCHEMA_VERSION = 1


def versioned(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``schema_version`` and ``inrdiag_version`` first."""
    from .. import __version__

    return {"schema_version": SCHEMA_VERSION, "inrdiag_version": __version__, **data}


def emit_json(data: Any) -> None:
    """Print ``data`` as the only thing on stdout (NaN/Inf become null: JSON has no such numbers); an object
    gets ``schema_version`` and ``inrdiag_version`` first."""
    if isinstance(data, dict):
        data = versioned(data)
    sys.stdout.write(json.dumps(_clean(data), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return (
        f"{x:.{digits}g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-2) else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    )


def sparkline(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] if math.isfinite(v) else "?"
                   for v in values)  # fmt: skip


def save_figure(fig, path: str, force: bool = False) -> None:
    """Save a matplotlib figure atomically; refuse to overwrite without ``force``."""
    from ..io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"), force)


def pyplot():
    """matplotlib.pyplot with a non-interactive backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
