"""``inrdiag examples``: the sample data that ships inside the package, copied where the docs expect it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .app import ForceOpt, JsonOpt, app


@app.command()
def examples(
    dest: Annotated[
        str | None,
        typer.Argument(help="Folder to copy the sample data into (default: only list it).", show_default=False),
    ] = None,
    json: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Copy the bundled sample data (images, cohort, occupancy grid, checkpoints) into a folder."""
    from ..sample_data import sample_data_dir, sample_files, write_examples

    root = sample_data_dir()
    data: dict[str, Any]
    if dest is None:
        data = {"folder": str(root), "files": [str(p) for p in sample_files()], "written": []}
    else:
        done = write_examples(dest, force)
        data = {"folder": str(root), "files": [str(p) for p in sample_files()],
                "written": [{"path": w.path, "status": w.status} for w in done]}  # fmt: skip
    if json:
        from ..report.common import emit_json

        emit_json(data)
        return
    from ..report.common import console

    c = console()
    if dest is None:
        c.print(f"sample data installed in {root} ({len(data['files'])} files):")
        for f in data["files"]:
            c.print(f"  {f}")
        c.print("copy it with: inrdiag examples DIR")
        return
    counts = {s: sum(1 for w in done if w.status == s) for s in ("wrote", "replaced", "same")}
    c.print(f"{dest}: wrote {counts['wrote']} files, replaced {counts['replaced']}, {counts['same']} already "
            f"up to date (sources and licences: {dest}/DATA_SOURCES.md)")  # fmt: skip
