"""Safe file output: never clobber a user's file unless asked, never write onto an input, never leave a
half-written file or folder.

Every output goes to a temp file (or temp folder) in the output's own folder and is renamed into place:
the rename is atomic on POSIX, and a temp file beside its output is on the same file system, so readers
see the old output or the complete new one, and an interrupted run leaves the old one intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from .errors import InrdiagError, OutputExistsError

#: Longest file name written (bytes); most file systems allow 255.
NAME_MAX = 255
_FORCE_HINT = "pass --force, or force=True from Python, to replace it"


def user_path(path: str | os.PathLike, what: str = "path") -> Path:
    """``path`` as a Path with ``~`` expanded; refuses None, non-paths, empty strings and NUL bytes."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise InrdiagError(f"{what} must be a file path (str or os.PathLike), got {type(path).__name__} {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise InrdiagError(f"{what} must be a non-empty file path, got {text!r}")
    if "\0" in text:
        raise InrdiagError(f"{what} {text!r} holds a NUL byte")
    return Path(os.path.expanduser(text))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and are one file (after links: ``os.path.samefile``)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_not_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), what: str = "") -> None:
    """Refuse an output that is one of the inputs (the same file after resolving links), whatever ``force`` says:
    replacing an earlier output is what force is for, destroying an input never is."""
    for inp in inputs:
        if inp is not None and same_file(path, user_path(inp)):
            label = f"{what} {path}" if what else str(path)
            raise InrdiagError(f"{label} is the input file {inp}; refusing to write an output onto an input "
                               "(even with --force / force=True): give another path")  # fmt: skip


def check_writable(path: str | os.PathLike, force: bool = False, inputs: Iterable = ()) -> Path:
    """Before any work: refuse an existing output (unless ``force``), an output that is one of ``inputs``,
    a folder in the file's place, a missing or unwritable parent folder, or a file name too long. Returns
    the path (``~`` expanded)."""
    p = user_path(path, "output path")
    check_not_input(p, inputs)
    if p.is_dir():
        raise InrdiagError(f"{p} is a folder, not a file path")
    if p.exists() and not force:
        raise OutputExistsError(f"{p} exists; refusing to overwrite it ({_FORCE_HINT})")
    if len(os.fsencode(p.name)) > NAME_MAX:
        raise InrdiagError(f"cannot write {p}: the file name is longer than {NAME_MAX} bytes")
    _check_folder(p)
    return p


def _folder(p: Path) -> Path:
    return p.parent if str(p.parent) else Path(".")


def _check_folder(p: Path) -> None:
    """The output's folder exists and a file can be created in it (probed with a temp file, then removed:
    permission bits alone do not tell, e.g. for /proc or a read-only mount)."""
    parent = _folder(p)
    if not parent.is_dir():
        raise InrdiagError(f"cannot write {p}: folder {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".inrdiag-probe-", dir=parent)
    except OSError as exc:
        raise InrdiagError(f"cannot write {p}: folder {parent} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def _tmp_prefix(p: Path) -> str:
    return f".{p.name[:64]}."


def _usual_mode(path: str, folder: bool = False) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)  # mkstemp/mkdtemp make 0600/0700


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], force: bool = False,
                 inputs: Iterable = ()) -> Path:  # fmt: skip
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place (see the module doc)."""
    inputs = list(inputs)
    p = check_writable(path, force, inputs)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(p), suffix=".tmp", dir=_folder(p))
    os.close(fd)
    try:
        write(tmp)
        _usual_mode(tmp)
        if p.exists() and not force:  # appeared while we were writing
            raise OutputExistsError(f"{p} exists; refusing to overwrite it ({_FORCE_HINT})")
        check_not_input(p, inputs)  # e.g. a link to an input put in its place meanwhile
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def check_writable_dir(folder: str | os.PathLike, names: Iterable[str], force: bool = False,
                       inputs: Iterable = ()) -> Path:  # fmt: skip
    """Before any work, for a folder output of the files ``names`` (written by ``atomic_dir``): refuse a file
    in its place, a folder holding other entries (the folder is replaced as a whole, so they would be lost),
    existing files without ``force``, one of ``inputs`` among them, a missing or unwritable parent."""
    d = user_path(folder, "output folder")
    names = list(names)
    try:  # one look at the folder (another run may be swapping it at this moment)
        entries: list[str] | None = sorted(os.listdir(d))
    except FileNotFoundError:
        entries = None
    except NotADirectoryError:
        raise InrdiagError(f"{d} exists and is not a folder") from None
    if entries is not None:
        other = [e for e in entries if e not in names]
        if other:
            shown = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "")
            raise InrdiagError(f"{d} holds other files ({shown}); the output is written as a whole folder, "
                               f"so give a new folder or one holding only {', '.join(names)}")  # fmt: skip
        for name in entries:
            check_not_input(d / name, inputs)
        if entries and not force:
            raise OutputExistsError(f"{d / entries[0]} exists; refusing to overwrite the folder {d} "
                                    f"({_FORCE_HINT})")  # fmt: skip
    if len(os.fsencode(d.name)) > NAME_MAX:
        raise InrdiagError(f"cannot write {d}: the folder name is longer than {NAME_MAX} bytes")
    _check_folder(d)
    return d


@contextmanager
def atomic_dir(folder: str | os.PathLike, names: Iterable[str], force: bool = False,
               inputs: Iterable = ()) -> Iterator[Path]:  # fmt: skip
    """Yield a temp folder beside ``folder``; the caller writes the files ``names`` into it. On success the temp
    folder replaces ``folder`` as a whole, so a reader (or a concurrent run) never sees one run's file beside
    another run's; on an exception (or an interrupt) it is removed and ``folder`` is left as it was.

    An existing ``folder`` (only ``names`` in it, see ``check_writable_dir``) is renamed aside, the new one
    renamed in, and the old one deleted (restored instead when the swap fails).
    """
    names = list(names)
    inputs = list(inputs)
    d = check_writable_dir(folder, names, force, inputs)
    tmp = tempfile.mkdtemp(prefix=_tmp_prefix(d), suffix=".tmp", dir=_folder(d))
    try:
        yield Path(tmp)
        missing = [n for n in names if not (Path(tmp) / n).is_file()]
        if missing:
            raise RuntimeError(f"atomic_dir({d}): the caller wrote no {', '.join(missing)}")  # a bug, not bad input
        _usual_mode(tmp, folder=True)
        _swap_in(Path(tmp), d, names, force, inputs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, d: Path, names: list[str], force: bool, inputs: list) -> None:
    """Swap ``tmp`` in as ``d``, with an advisory lock on the parent folder held for the swap: two runs
    writing the same folder at once (threads or processes on this machine) then swap one after the other
    instead of racing between their renames (measured: 4 threads x 10 saves raced to ENOTEMPTY)."""
    lock: ModuleType | None
    try:
        import fcntl as lock
    except ImportError:  # pragma: no cover - not POSIX: the retry loop alone
        lock = None
    fd = os.open(_folder(d), os.O_RDONLY) if lock is not None else None
    try:
        if lock is not None and fd is not None:
            lock.flock(fd, lock.LOCK_EX)
        _swap_in_locked(tmp, d, names, force, inputs)
    finally:
        if lock is not None and fd is not None:
            lock.flock(fd, lock.LOCK_UN)
            os.close(fd)


def _swap_in_locked(tmp: Path, d: Path, names: list[str], force: bool, inputs: list) -> None:
    for _ in range(8):  # another run may swap its folder in between our steps: check again and retry
        if not d.exists():
            try:
                os.rename(tmp, d)
                return
            except OSError:  # created meanwhile
                continue
        check_writable_dir(d, names, force, inputs)
        aside = tempfile.mkdtemp(prefix=_tmp_prefix(d), suffix=".old", dir=_folder(d))
        os.rmdir(aside)
        moved = False
        try:
            os.rename(d, aside)
            moved = True
            os.rename(tmp, d)
        except BaseException as exc:
            if moved and not d.exists():
                os.rename(aside, d)  # put the old folder back
            elif moved:  # another run's complete folder is in place; the old one goes, as asked
                shutil.rmtree(aside, ignore_errors=True)
            if isinstance(exc, OSError):
                continue
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return
    raise InrdiagError(f"cannot write {d}: other processes keep replacing it; try again")
