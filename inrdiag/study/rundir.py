"""The run folder of a study (``--out RUN_DIR``): what the study is, and one record per finished job.

Layout::

    RUN_DIR/study.json        {"schema": 1, "kind": "compare" | "freeze-sweep", "config": {...}}
    RUN_DIR/jobs/<key>.json   one finished job: {"schema": 1, "key", "job": its full config,
                              "result": its numbers, "run": where/how it ran}

Every file is written to a temp file beside it, flushed to disk and renamed into place, so a crash
or Ctrl-C leaves either no record or a whole one: only the jobs in flight are lost. A rerun with
the same study config skips every job that has a record; a different config is refused with the
first differing field named. The report is rebuilt from these files alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InrdiagError

SCHEMA = 1


class RunDirError(InrdiagError):
    """A run folder that does not belong to this study, or an unreadable record."""


def first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted path, old value, new value) where two JSON-like values differ, else None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            if k not in old or k not in new:
                return (f"{path}{k}", old.get(k, "<absent>"), new.get(k, "<absent>"))
            d = first_difference(old[k], new[k], f"{path}{k}.")
            if d is not None:
                return d
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            d = first_difference(a, b, f"{path}{i}.")
            if d is not None:
                return d
        return None
    return None if old == new else (path.rstrip(".") or "<root>", old, new)


def _short(x: Any) -> str:
    s = json.dumps(x) if not isinstance(x, str) else x
    return s if len(s) <= 60 else s[:57] + "..."


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temp file beside it, fsync, rename)."""
    from ..files import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write, force=True)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable record ({type(exc).__name__}); delete it to rerun that job") from None


class RunDir:
    """A study's run folder. ``RunDir.open(path, kind, config)`` creates it or checks it matches."""

    def __init__(self, path: str | os.PathLike, kind: str, config: dict[str, Any]) -> None:
        self.path = Path(path)
        self.kind = kind
        self.config = config

    @property
    def jobs_dir(self) -> Path:
        return self.path / "jobs"

    @classmethod
    def open(cls, path: str | os.PathLike, kind: str, config: dict[str, Any]) -> RunDir:
        """Create ``path`` for this study, or reopen it after checking it holds the same study."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"--out {p} is a file; give a folder for the run records")
        meta = p / "study.json"
        if meta.exists():
            old = read_json(meta)
            if old.get("kind") != kind:
                raise RunDirError(f"{p} holds a {old.get('kind')} study, not a {kind} study; use another --out")
            diff = first_difference(old.get("config"), config)
            if diff is not None:
                field, a, b = diff
                raise RunDirError(
                    f"{p} was made with {field} = {_short(a)}, this command has {_short(b)}; "
                    "rerun with the same flags to resume, or give another --out"
                )
        else:
            if p.exists() and any(p.iterdir()):
                raise RunDirError(f"--out {p} is a non-empty folder without study.json; give a new or empty folder")
            parent = p.parent if str(p.parent) else Path(".")
            if not parent.is_dir():
                raise RunDirError(f"cannot create {p}: folder {parent} does not exist")
            (p / "jobs").mkdir(parents=True, exist_ok=True)
            write_json(meta, {"schema": SCHEMA, "kind": kind, "config": config})
        (p / "jobs").mkdir(exist_ok=True)
        return cls(p, kind, config)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunDir:
        """Reopen an existing run folder as it is (``--from RUN_DIR``)."""
        p = Path(path)
        meta = p / "study.json"
        if not meta.is_file():
            raise RunDirError(f"{p} is not a run folder (no study.json); give the --out folder of a study")
        data = read_json(meta)
        if data.get("schema") != SCHEMA or "config" not in data or "kind" not in data:
            raise RunDirError(f"{meta}: not a study file of this inrdiag version (schema {data.get('schema')})")
        return cls(p, data["kind"], data["config"])

    def record_path(self, key: str) -> Path:
        return self.jobs_dir / f"{key}.json"

    def records(self) -> dict[str, dict[str, Any]]:
        """Every finished job's record, by key (temp files of jobs in flight are ignored)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.jobs_dir.is_dir():
            return out
        for f in sorted(self.jobs_dir.glob("*.json")):
            rec = read_json(f)
            if not isinstance(rec, dict) or "key" not in rec or "job" not in rec or "result" not in rec:
                raise RunDirError(f"{f}: not a job record; delete it to rerun that job")
            out[rec["key"]] = rec
        return out

    def count(self) -> int:
        return len(list(self.jobs_dir.glob("*.json"))) if self.jobs_dir.is_dir() else 0

    def write(self, record: dict[str, Any]) -> None:
        write_json(self.record_path(record["key"]), record)
