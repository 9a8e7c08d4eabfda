"""Safe file output: never clobber a user's file unless asked, never leave a half-written one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InrdiagError, OutputExistsError


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an existing output (unless ``force``) or a missing parent folder, before any work."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(f"{p} exists; refusing to overwrite it (pass --force to replace it)")
    if p.exists() and p.is_dir():
        raise InrdiagError(f"{p} is a folder, not a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InrdiagError(f"cannot write {p}: folder {parent} does not exist")
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], force: bool = False) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place.

    The rename is atomic on POSIX, so readers see the old file or the complete new one.
    """
    p = check_writable(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        if p.exists() and not force:  # appeared while we were writing
            raise OutputExistsError(f"{p} exists; refusing to overwrite it (pass --force to replace it)")
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p
