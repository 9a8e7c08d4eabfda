"""The sample data shipped inside the package (``inrdiag/data``): photographs, a cohort, an occupancy grid and
two checkpoints, with their sources and licences in ``DATA_SOURCES.md``.

It is package data, so it is there after any install (wheel, sdist or editable); ``write_examples`` copies it
to a folder so the commands in the README and docs (``examples/...``) work from anywhere.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import InrdiagError, OutputExistsError


def sample_data_dir() -> Path:
    """The folder of the installed sample data (``checkpoints/``, ``images/``, ``cohort/``, ``occupancy/``)."""
    from importlib.resources import files

    d = Path(str(files("inrdiag") / "data"))
    if not (d / "DATA_SOURCES.md").is_file():
        raise InrdiagError(f"the sample data is missing from this install (looked in {d}); reinstall inrdiag")
    return d


def sample_files() -> list[Path]:
    """Every sample file, relative to ``sample_data_dir()``, sorted."""
    root = sample_data_dir()
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


@dataclass(frozen=True)
class Written:
    """One sample file and what ``write_examples`` did with it: "wrote", "same" (identical file kept) or
    "replaced" (with ``force``)."""

    path: str
    status: str


def write_examples(dest: str | os.PathLike[str], force: bool = False) -> list[Written]:
    """Copy the sample data into ``dest`` (created if missing; its parent must exist).

    Idempotent: a file already there with the same bytes is kept ("same"), so running it twice is harmless.
    A different file in the way is refused (nothing written) unless ``force``. Returns one ``Written`` per file.
    """
    root = sample_data_dir()
    out = Path(dest).expanduser()
    if out.exists() and not out.is_dir():
        raise InrdiagError(f"{out} exists and is not a folder")
    if not out.parent.is_dir():
        raise InrdiagError(f"cannot write {out}: folder {out.parent} does not exist")
    plan = []
    for rel in sample_files():
        src, dst = root / rel, out / rel
        if dst.is_dir():
            raise InrdiagError(f"{dst} is a folder, not a file path")
        if dst.exists() and filecmp.cmp(src, dst, shallow=False):
            plan.append((src, dst, "same"))
        elif dst.exists():
            if not force:
                raise OutputExistsError(f"{dst} exists and differs from the sample file; refusing to overwrite it "
                                        "(pass --force to replace it)")  # fmt: skip
            plan.append((src, dst, "replaced"))
        else:
            plan.append((src, dst, "wrote"))
    done = []
    for src, dst, status in plan:
        if status != "same":
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
        done.append(Written(str(dst), status))
    return done
