"""Per-layer results as flat rows: one table over many checkpoints, CSV files, pandas DataFrames.

A rank report is nested JSON (layers, each with a representation spectrum); comparing checkpoints —
along a training run, across inits — wants one row per (checkpoint, layer) with plain columns, the
shape WeightWatcher users know from its per-layer DataFrame. ``rank_rows`` makes those rows from a
``RankReport`` (or its ``to_dict()``); ``write_csv`` and ``to_dataframe`` take them from there.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InrdiagError

if TYPE_CHECKING:
    import pandas as pd

    from .spectra import RankReport

#: Columns of a rank row, in order (``numerical_rank`` etc. are of the layer's representation Z_k).
RANK_COLUMNS = (
    "checkpoint", "index", "name", "role", "out_features", "in_features", "weight_stable_rank",
    "numerical_rank", "numerical_rank_fraction", "effective_rank", "effective_rank_fraction",
    "stable_rank", "stable_rank_fraction", "dead_units", "recommended_freeze_depth", "grid", "tol",
)  # fmt: skip
#: File endings taken when a folder of checkpoints is given.
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


def _natural(text: str) -> tuple:
    """Sort key with numbers compared as numbers: step_900 before step_1000."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def expand_checkpoints(paths: list[str]) -> list[str]:
    """Files as given; a folder becomes its checkpoint files (by ending), in natural order."""
    out: list[str] = []
    for p in paths:
        q = Path(os.path.expanduser(p))
        if q.is_dir():
            found = sorted((f for f in q.iterdir() if f.is_file() and f.suffix in CHECKPOINT_SUFFIXES),
                           key=lambda f: _natural(f.name))  # fmt: skip
            if not found:
                raise InrdiagError(f"{q}: a folder with no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)})")
            out.extend(str(f) for f in found)
        else:
            out.append(str(q))
    return out


def rank_rows(report: RankReport | dict[str, Any], checkpoint: str | None = None) -> list[dict[str, Any]]:
    """One row per linear layer of a rank report (``RankReport`` or its ``to_dict()``); see RANK_COLUMNS."""
    d = report if isinstance(report, dict) else report.to_dict()
    layers = d["layers"]
    last = len(layers) - 1
    rows = []
    for layer in layers:
        rep = layer.get("representation") or {}
        k = layer["index"]
        rows.append({
            "checkpoint": checkpoint,
            "index": k,
            "name": layer["name"],
            "role": "inlet" if k == 0 else ("output head" if k == last else "hidden"),
            "out_features": layer["out_features"],
            "in_features": layer["in_features"],
            "weight_stable_rank": layer["weight_stable_rank"],
            **{c: rep.get(c) for c in RANK_COLUMNS[7:14]},
            "recommended_freeze_depth": d.get("recommended_freeze_depth"),
            "grid": "x".join(str(s) for s in d["grid"]["shape"]),
            "tol": d.get("tol"),
        })  # fmt: skip
    return rows


def csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...] = RANK_COLUMNS) -> str:
    """The rows as CSV text (header first; None as an empty field)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return buf.getvalue()


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike, force: bool = False,
              columns: tuple[str, ...] = RANK_COLUMNS) -> Path:  # fmt: skip
    """Write the rows as CSV, atomically (refuses to overwrite unless ``force``)."""
    from .files import atomic_write

    text = csv_text(rows, columns)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write, force)


def to_dataframe(rows: list[dict[str, Any]], columns: tuple[str, ...] = RANK_COLUMNS) -> pd.DataFrame:
    """The rows as a pandas DataFrame (pandas is optional: ``pip install 'inrdiag[pandas]'``)."""
    try:
        import pandas as pd
    except ImportError:
        raise InrdiagError("to_dataframe needs pandas: pip install 'inrdiag[pandas]' (or pandas)") from None
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=list(columns))
