"""Shared rendering helpers: consoles, JSON output, number formats, safe figure saving."""

from __future__ import annotations

import json
import math
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..schema import SCHEMA_VERSION, versioned  # noqa: F401  (SCHEMA_VERSION: re-exported)

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console

SPARK = "▁▂▃▄▅▆▇█"


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr): no highlighting, no soft wrapping (tables keep their lines)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


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
    """A number for a table: ``-`` for None, ints as they are, else ``digits`` significant places."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return (
        f"{x:.{digits}g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-2) else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    )


def say(c: Console, text: str, indent: int = 2, first: str = "") -> None:
    """Print plain ``text`` wrapped at word boundaries to the console's width, continuation lines indented
    (rich's own wrapping would start them at column 0), so lines read well at 80 columns. No markup."""
    import textwrap

    from rich.text import Text

    lines = textwrap.wrap(first + text, width=max(40, c.width - 1), subsequent_indent=" " * indent,
                          break_on_hyphens=False)  # fmt: skip
    for line in lines or [""]:
        c.print(Text(line))


def sparkline(values: list[float]) -> str:
    """``values`` as a line of block characters, lowest to highest (``?`` for a non-finite value)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] if math.isfinite(v) else "?"
                   for v in values)  # fmt: skip


#: File formats ``save_figure`` writes, chosen by the path's extension (pdf and svg are vector output).
PLOT_FORMATS = ("png", "pdf", "svg")

#: The one look of every plot: small fonts, light grid, no top/right spines, a colour-blind-safe cycle
#: (Okabe & Ito), the inlet always in ``INLET_COLOR``.
INLET_COLOR = "#D55E00"
CYCLE = ["#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
STYLE: dict[str, Any] = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.4,
    "figure.dpi": 100, "savefig.dpi": 150, "image.cmap": "magma", "svg.fonttype": "none",
}  # fmt: skip


def plot_format(path: str) -> str:
    """The format for ``path`` from its extension; anything but .png/.pdf/.svg is refused (one line)."""
    from pathlib import Path

    from ..errors import InrdiagError

    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in PLOT_FORMATS:
        raise InrdiagError(
            f"{path}: a plot is written as .png, .pdf or .svg (got {'.' + ext if ext else 'no extension'})"
        )
    return ext


def save_figure(fig: Figure, path: str, force: bool = False) -> None:
    """Save a matplotlib figure atomically in the format its extension names (png, or vector pdf/svg, with no
    creation date so the same plot gives the same bytes); refuse to overwrite without ``force``."""
    from ..files import atomic_write

    kind = plot_format(path)
    meta: dict[str, Any] = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[kind]
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=kind, bbox_inches="tight", metadata=meta), force)


def pyplot() -> ModuleType:
    """matplotlib.pyplot with a non-interactive backend (no display needed) and inrdiag's style applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    plt.style.use({**STYLE, "axes.prop_cycle": cycler(color=CYCLE)})
    return plt


def role_name(index: int, last: int) -> str:
    """How plots and tables name linear layer ``index`` of ``last + 1``: inlet, hidden k, head."""
    return "inlet" if index == 0 else "head" if index == last else f"hidden {index}"
