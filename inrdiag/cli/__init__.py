"""The command line: parse, call the engine, render. The only place that prints errors and exits.

Every error the user can cause (an ``InrdiagError`` or a usage error) becomes one line
``error: ...`` on stderr and exit code 2. Set ``INRDIAG_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import os
import sys

# Commands register on `app` as their modules are imported; this order is the order in --help.
from . import core  # noqa: F401
from . import ntk  # noqa: F401
from . import fit  # noqa: F401
from . import cohort  # noqa: F401
from . import sae  # noqa: F401
from . import examples  # noqa: F401
from .app import app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    # Same numbers for the same --seed even on a busy machine: with MKL's default dynamic threading,
    # MKL may use fewer threads under load and so sum in another order (measured: two concurrent
    # 1,000-step SAE trainings diverged; with MKL_DYNAMIC=FALSE they matched each other and an idle run).
    # Set before torch loads MKL; an explicit setting by the user wins.
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    import typer

    from ..errors import InrdiagError

    cx = _click_exceptions()

    command = _command()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("INRDIAG_DEBUG") == "1"
    try:
        rv = command.main(args=args, prog_name="inrdiag", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except InrdiagError as exc:
        _fail(str(exc))
        code = 2
    except cx.UsageError as exc:
        if exc.format_message():  # no_args_is_help raises with an empty message after the help
            _fail(exc.format_message())
        code = 2
    except cx.ClickException as exc:
        _fail(exc.format_message())
        code = exc.exit_code or 2
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted")
        code = 130
    except MemoryError:
        _fail("out of memory; try a smaller --grid or --points")
        code = 2
    except Exception as exc:  # noqa: BLE001 - the promise is: no traceback, ever
        if debug:
            raise
        if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():  # e.g. torch.cuda.OutOfMemoryError
            _fail("out of memory on the device; try a smaller --grid/--points (or --atoms for sae), or --device cpu")
        else:
            _fail(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                  "(please report it; INRDIAG_DEBUG=1 shows the traceback)")  # fmt: skip
        code = 2
    if argv is None:
        sys.exit(code)
    return code


def _fail(msg: str) -> None:
    line = " ".join(msg.split())
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()


def _click_exceptions():
    """Click's exception classes as Typer raises them (recent Typer vendors Click as typer._click)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older Typer on top of Click
        from click import exceptions
    return exceptions


def _command():
    import typer.main

    from .app import finish_help

    group = typer.main.get_command(app)
    finish_help(group)
    return group
