"""One table over several checkpoints (``inrdiag rank A B ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .common import console

if TYPE_CHECKING:
    from ..spectra import RankReport


def render_rank_table(paths: list[str], reports: list[RankReport]) -> None:
    """A row per checkpoint: inlet ranks, the weight stable rank of every layer, the freeze depth."""
    from rich.table import Table

    c = console()
    first = reports[0]
    shape = "x".join(map(str, first.grid_shape))
    t = Table(title=f"rank diagnostics of {len(paths)} checkpoints on a {shape} grid (tol {first.tol:g})",
              title_justify="left")  # fmt: skip
    names = [Path(p).name for p in paths]
    if len(set(names)) < len(names):  # same file names in different folders: show the paths
        names = list(paths)
    t.add_column("checkpoint", min_width=min(24, max(len(n) for n in names)), overflow="fold")
    for col in ("inlet rank\nnum. / eff.", "dead\ninlet"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("weight stable rank\nby layer 0..L", no_wrap=False, min_width=12)
    t.add_column("k*", justify="right", no_wrap=True)
    for name, rep in zip(names, reports):
        inlet = rep.layers[0].representation
        if inlet is None:
            ranks = dead = "-"
        else:
            ranks = f"{inlet.numerical_rank} / {inlet.effective_rank:.1f}"
            dead = "-" if inlet.dead_units is None else str(inlet.dead_units)
        srs = " ".join(f"{layer.weight_stable_rank:.1f}" for layer in rep.layers)
        t.add_row(name, ranks, dead, srs, str(rep.recommended_freeze_depth))
    c.print(t)
    c.print("[dim]k*: recommended freeze depth; "
            "--json or --csv for every layer's spectrum statistics[/dim]")  # fmt: skip
