"""Versions stamped into every JSON output and file inrdiag writes (engine and report share them)."""

from __future__ import annotations

from typing import Any

from . import __version__

#: Version of the JSON layout every command prints (and of JSON written to files): raised when a key is
#: renamed or removed or its meaning changes; adding keys keeps it.
SCHEMA_VERSION = 1


def versioned(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``schema_version`` and ``inrdiag_version`` first."""
    return {"schema_version": SCHEMA_VERSION, "inrdiag_version": __version__, **data}
