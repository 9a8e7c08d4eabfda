"""``inrdiag info`` for a model built from the user's own code (``--model-code``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import console

if TYPE_CHECKING:
    from ..models.usercode import UserLoaded


def render_user_info(loaded: UserLoaded) -> None:
    from rich.table import Table

    c = console()
    d = loaded.to_dict()
    c.print(f"[bold]{loaded.path}[/bold]")
    c.print(f"  format     {loaded.file_format}")
    c.print(f"  model      {d['class']} from your code {loaded.code.target} (--model-code)")
    if loaded.code.kwargs or loaded.code.args:
        c.print(f"  arguments  {loaded.code.to_dict()['kwargs'] or loaded.code.to_dict()['args']}", markup=False)
    c.print("  architecture: defined by your code; nothing was inferred from the file's key names")
    c.print(f"  parameters {d['parameters']:,}")
    t = Table(title="linear layers (nn.Linear modules, in execution order)", title_justify="left")
    for col in ("#", "module", "shape (out, in)", "role"):
        t.add_column(col)
    for row in d.get("layers", []):
        t.add_row(str(row["index"]), row["name"], f"({row['out_features']}, {row['in_features']})", row["role"])
    c.print(t)
    t = Table(title="tensors in the file", title_justify="left")
    for col in ("key", "shape", "dtype", "used", "role / why not"):
        t.add_column(col)
    for ti in loaded.tensors:
        t.add_row(ti.key, str(ti.shape), ti.dtype, "yes" if ti.used else "[yellow]no[/yellow]", ti.role)
    c.print(t)
    if loaded.nonfinite:
        c.print(f"[red]non-finite values (NaN/Inf) in: {', '.join(loaded.nonfinite)}[/red]")
    for note in loaded.notes:
        c.print(f"note: {note}", markup=False)
