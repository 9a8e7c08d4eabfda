"""The command line: parse, call the engine, render. The only place that prints errors and exits.

Exit codes (also in README.md and ``inrdiag --help``); every exception that can reach the user is
mapped here on purpose, and every non-zero exit prints exactly one line ``error: ...`` on stderr:

====  ===========================================================================================
0     success
1     ``inrdiag check``: a threshold failed
2     bad input or usage: an ``InrdiagError``, a usage error, a path that cannot be read or written
      (``OSError`` naming the path), ``MemoryError`` / a device out of memory (with the flag to lower)
70    internal error, i.e. a bug (any other exception; ``EX_SOFTWARE`` of sysexits.h). The line says
      so; ``INRDIAG_DEBUG=1`` prints the traceback before it
130   interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM). Outputs are written atomically, so an
      interrupted run leaves no partial file and every earlier file intact
====  ===========================================================================================
"""

from __future__ import annotations

import functools
import os
import sys
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

# Commands register on `app` as their modules are imported; this order is the order in --help.
from . import diagnose  # noqa: F401
from . import ntk  # noqa: F401
from . import fit  # noqa: F401
from . import cohort  # noqa: F401
from . import sae  # noqa: F401
from . import examples  # noqa: F401
from .app import app

if TYPE_CHECKING:
    from typer.core import TyperGroup

    from ..threads import ThreadChoice

__all__ = [
    "app",
    "main",
    "console_main",
    "leave",
    "EXIT_OK",
    "EXIT_CHECK_FAILED",
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM exits 128 + 15 = 143

#: OSError numbers that describe the user's files or machine (a path that is missing, not writable, a
#: full disk), not a bug: exit 2 with the path. Any other OSError is an internal error.
_USER_ERRNOS = {"ENOENT", "EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "EISDIR", "ENOTDIR", "EEXIST",
                "ENAMETOOLONG", "ELOOP", "EFBIG", "EBUSY", "ETXTBSY", "EXDEV", "EIO", "ENXIO", "ENODEV"}  # fmt: skip


class Interrupted(BaseException):
    """Raised by the CLI's SIGINT/SIGTERM handlers. Not a KeyboardInterrupt, which Typer turns into a
    silent ``Exit(130)`` before ``main`` could name it; a BaseException, so no ``except Exception`` in
    the engine swallows it, while ``atomic_write`` (``except BaseException``) still removes its temp file."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def main(argv: list[str] | None = None) -> int:
    # Same numbers for the same --seed even on a busy machine: with MKL's default dynamic threading,
    # MKL may use fewer threads under load and so sum in another order (measured: two concurrent
    # 1,000-step SAE trainings diverged; with MKL_DYNAMIC=FALSE they matched each other and an idle run).
    # Set before torch loads MKL; an explicit setting by the user wins.
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        thread_policy(args)
    except Exception as exc:  # noqa: BLE001 - a bad INRDIAG_THREADS is bad input like any other
        from ..errors import InrdiagError

        if not isinstance(exc, InrdiagError):
            raise
        _fail(str(exc))
        return _exit(EXIT_BAD_INPUT, argv)
    try:
        with _signals():
            code = _run(args)
    except Interrupted as exc:  # a signal in the instant between the command's end and the handlers' reset
        code = _interrupted(exc)
    if argv is None:
        sys.exit(code)
    return code


def console_main() -> NoReturn:
    """The ``inrdiag`` console script and ``python -m inrdiag``: ``main`` on ``sys.argv``, then ``leave``.
    (``main()`` itself ends with ``sys.exit``, catchable by whoever calls it from Python.)"""
    args = sys.argv[1:]
    if args and args[0] in COMPUTE_COMMANDS and "torch" not in sys.modules:
        gc_until_torch()
    leave(main(args))


def gc_until_torch() -> None:
    """No cyclic garbage collection until torch is imported; then the collector again, with every object
    that exists at that point frozen (``gc.freeze``: kept, never scanned again).

    Importing torch creates ~250,000 long-lived objects, and each full collection scans all of them. In a
    computing command's process that cost 0.42 s (``ntk MODEL``); with this, 0.007 s
    (``benchmarks/bench_startup.py``). The frozen objects are modules, classes and functions
    that live until the process ends, plus the cyclic garbage made while torch was imported (~7,000 small
    objects, ~0.65 MB, measured), which stays; everything created after the import is collected as usual.
    The collector is back once torch's module has run, also when that import fails; a mere look-up of
    torch (``importlib.util.find_spec``) changes nothing."""
    import gc
    import importlib.abc

    class _AfterTorch(importlib.abc.MetaPathFinder):
        """Finds nothing itself: for torch it passes on the spec the other finders give, its loader's
        ``exec_module`` wrapped to turn the collector back on (and leave ``sys.meta_path``) once it has run."""

        looking = False

        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name != "torch" or self.looking:
                return None
            self.looking = True
            try:
                spec = next((s for f in list(sys.meta_path) if f is not self and hasattr(f, "find_spec")
                             and (s := f.find_spec(name, path, target)) is not None), None)  # fmt: skip
            except BaseException:
                _gc_back()
                raise
            finally:
                self.looking = False
            loader = getattr(spec, "loader", None)
            if loader is None or not hasattr(loader, "exec_module"):
                _gc_back()  # nothing to wait for: torch is not there (the import fails) or cannot be hooked
                return spec
            run = loader.exec_module

            def exec_module(module: ModuleType) -> None:
                try:
                    del loader.exec_module  # the loader's own method again, for whatever else it loads
                except AttributeError:
                    pass
                try:
                    run(module)
                finally:
                    _gc_back()

            try:
                loader.exec_module = exec_module
            except (AttributeError, TypeError):  # a loader that takes no attribute: no waiting
                _gc_back()
            return spec

    finder = _AfterTorch()

    def _gc_back() -> None:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        if not gc.isenabled():
            gc.freeze()
            gc.enable()

    gc.disable()
    sys.meta_path.insert(0, finder)


def leave(code: int) -> NoReturn:
    """End a command's process with ``code``: ``sys.exit``, except that once torch is loaded the
    interpreter's teardown is skipped, which costs ~1 s with torch's modules and libraries loaded
    (measured on the 2-core VM: ``import torch, inrdiag.cli`` alone, 2.97-3.82 s with the normal exit,
    1.84-2.68 s with ``os._exit``). Everything a normal exit does for the outputs is done first:
    stdout and stderr are flushed, the ``atexit`` handlers run (temporary folders' cleanup,
    multiprocessing's), and C's stdio buffers are flushed. A plain ``sys.exit`` instead when other
    non-daemon threads are alive (a normal exit waits for them), a profiler or tracer is active
    (``python -m cProfile``, coverage: they write their results on the way out), ``INRDIAG_FAST_EXIT=0``
    is set, or a flush fails (a closed pipe: the normal path reports it)."""
    import threading

    others = any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
    if ("torch" not in sys.modules or others or sys.getprofile() is not None or sys.gettrace() is not None
            or os.environ.get("INRDIAG_FAST_EXIT") == "0"):  # fmt: skip
        sys.exit(code)
    import atexit

    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        import ctypes

        ctypes.CDLL(None).fflush(None)  # what C libraries left in stdio buffers (e.g. NCCL_DEBUG lines)
    except Exception:  # noqa: BLE001 - any trouble: the normal exit, which reports what it reports
        sys.exit(code)
    os._exit(code)


#: Commands that compute (the thread policy applies); info, examples and --help need no threads.
COMPUTE_COMMANDS = {"rank", "check", "ntk", "fit", "compare", "reinit", "cohort-train", "freeze-sweep", "sae"}


def thread_policy(args: list[str], torch_loaded: bool | None = None) -> ThreadChoice | None:
    """Choose the CPU thread count before torch starts (``inrdiag.threads``) for a computing command.

    Applies only in a fresh process: when torch is already imported (``main`` called from Python, as
    the tests do), the host process has chosen its threads and is left alone. Returns the choice (or
    None). A command's ``--threads N`` still wins: it sets torch's count when the work starts.
    """
    if not args or args[0] not in COMPUTE_COMMANDS or any(a in ("-h", "--help") for a in args):
        return None
    if torch_loaded is None:
        torch_loaded = "torch" in sys.modules
    if torch_loaded:
        return None
    from ..threads import apply_before_torch, choose_threads

    choice = choose_threads()
    apply_before_torch(choice)
    from .. import threads

    threads.LAST = choice  # the table output says so when the policy chose fewer threads (cli.app.show)
    return choice


def _exit(code: int, argv: list[str] | None) -> int:
    if argv is None:
        sys.exit(code)
    return code


def _run(args: list[str]) -> int:
    import typer

    from ..errors import InrdiagError

    cx = _click_exceptions()
    debug = os.environ.get("INRDIAG_DEBUG") == "1"
    try:
        rv = _command().main(args=args, prog_name="inrdiag", standalone_mode=False)
        if rv == EXIT_INTERRUPTED:  # Typer turns a KeyboardInterrupt into a silent Exit(130)
            _fail("interrupted")
        return rv if isinstance(rv, int) else EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # e.g. Typer on a closed stdout pipe
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_BAD_INPUT)
    except InrdiagError as exc:
        _fail(str(exc) or type(exc).__name__)
        return EXIT_BAD_INPUT
    except cx.UsageError as exc:
        if exc.format_message():  # no_args_is_help raises with an empty message after the help
            _fail(exc.format_message())
        return EXIT_BAD_INPUT
    except cx.ClickException as exc:
        _fail(exc.format_message())
        return exc.exit_code or EXIT_BAD_INPUT
    except Interrupted as exc:
        return _interrupted(exc)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except MemoryError:
        _fail("out of memory; try a smaller --grid, --points, --size, --width or --batch-size")
        return EXIT_BAD_INPUT
    except OSError as exc:
        import errno

        if errno.errorcode.get(exc.errno or 0) in _USER_ERRNOS:
            path = exc.filename if exc.filename is not None else ""
            where = f"{path}: " if path != "" else ""
            _fail(f"{where}{exc.strerror or exc}")
            return EXIT_BAD_INPUT
        return _internal(exc, debug)
    except Exception as exc:  # noqa: BLE001 - the promise is: no traceback, ever
        if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():  # e.g. torch.cuda.OutOfMemoryError
            _fail("out of memory on the device; try a smaller --grid/--points (or --atoms for sae), or --device cpu")
            return EXIT_BAD_INPUT
        return _internal(exc, debug)


def _interrupted(exc: Interrupted) -> int:
    import signal

    _fail("interrupted" if exc.signum == signal.SIGINT else "terminated")
    return 128 + int(exc.signum)


def _internal(exc: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    first = str(exc).splitlines()[0] if str(exc).strip() else ""
    _fail(f"internal error (a bug in inrdiag, exit {EXIT_INTERNAL}): {type(exc).__name__}: {first} "
          "(please report it; INRDIAG_DEBUG=1 shows the traceback)")  # fmt: skip
    return EXIT_INTERNAL


class _signals:
    """While a command runs: SIGINT and SIGTERM raise ``Interrupted`` (previous handlers restored after).

    Only in the main thread (``signal.signal`` is refused elsewhere), e.g. not under a threaded test runner.
    """

    def __enter__(self) -> _signals:
        import signal
        import threading

        self.saved: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.saved[sig] = signal.signal(sig, _raise_interrupted)
            except (ValueError, OSError):  # pragma: no cover - e.g. an embedded interpreter
                pass
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        import signal

        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _fail(msg: str) -> None:
    line = " ".join(msg.split())
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()


def _click_exceptions() -> ModuleType:
    """Click's exception classes as Typer raises them (recent Typer vendors Click as typer._click)."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # older Typer on top of Click
        return importlib.import_module("click.exceptions")


@functools.lru_cache(maxsize=1)
def _command() -> TyperGroup:
    """The Click command of the Typer app, built once (about 0.1 s: in-process callers such as the tests and
    the fuzz test run ``main`` thousands of times; Click commands are reusable across invocations)."""
    import typer.main
    from typer.core import TyperGroup

    from .app import finish_help

    group = typer.main.get_command(app)
    if not isinstance(group, TyperGroup):  # pragma: no cover - an app with several commands is a group
        raise TypeError(f"the Typer app built a {type(group).__name__}, not a group of commands")
    finish_help(group)
    return group
