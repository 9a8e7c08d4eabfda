"""The Typer app object and the options every command shares (declared once, used everywhere).

Nothing here imports torch: heavy imports live inside command bodies so ``inrdiag --help`` is fast.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, get_type_hints

import typer

app = typer.Typer(
    name="inrdiag",
    help="Diagnostics for coordinate MLPs (implicit neural representations): why an INR fits badly "
    "and what to change.\n\nExit codes: 0 ok; 1 a `check` threshold failed; 2 bad input or usage (one line "
    "`error: ...` on stderr); 70 internal error, i.e. a bug in inrdiag (please report it; INRDIAG_DEBUG=1 prints "
    "the traceback); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): no partial output is left.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

LOADING = "Model loading (what shapes cannot tell)"

ModelArg = Annotated[
    str,
    typer.Argument(help="Checkpoint: .safetensors (inrdiag or plain), .pt/.pth/.ckpt state dict.", show_default=False),
]
ActivationOpt = Annotated[
    str | None,
    typer.Option(
        "--activation",
        help="Hidden activation: relu|sine|finer|gauss|tanh|gelu|softplus|leaky_relu.",
        rich_help_panel=LOADING,
        show_default=False,
    ),
]
W0Opt = Annotated[
    float | None,
    typer.Option(
        "--w0",
        help="Sine/FINER frequency (or Gauss scale) of every layer (official SIREN: 30).",
        rich_help_panel=LOADING,
        show_default=False,
    ),
]
W0HiddenOpt = Annotated[
    float | None,
    typer.Option(
        "--w0-hidden",
        help="Override w0 of the hidden layers only (siren-pytorch: 1).",
        rich_help_panel=LOADING,
        show_default=False,
    ),
]
EncodingOpt = Annotated[
    str | None,
    typer.Option(
        "--encoding", help="Coordinate encoding: none|fourier|positional.", rich_help_panel=LOADING, show_default=False
    ),
]
FrequenciesOpt = Annotated[
    int | None,
    typer.Option(
        "--frequencies",
        help="Positional encoding: number of frequencies L.",
        rich_help_panel=LOADING,
        show_default=False,
    ),
]
HeadOpt = Annotated[
    int | None,
    typer.Option(
        "--head",
        help="Cohort checkpoints: which per-signal head to attach (default 0).",
        rich_help_panel=LOADING,
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present) | cpu | cuda.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]
PlotOpt = Annotated[str | None, typer.Option("--plot", help="Write a PNG plot to this path.", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
GridOpt = Annotated[
    int | None,
    typer.Option(
        "--grid", help="Grid points per axis in [-1,1] (default 256 for 2-D inputs, 48 for 3-D).", show_default=False
    ),
]
TolOpt = Annotated[float, typer.Option("--tol", help="Numerical rank counts singular values above tol * s_max.")]


def _seed_in_range(value: int) -> int:
    from ..errors import InrdiagError
    from ..seeds import check_seed

    try:
        return check_seed(value)
    except InrdiagError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--seed "), param_hint="'--seed'") from None


def seed_option(help: str, panel: str | None = None) -> Any:
    """The one ``--seed`` option type of every command: an integer in [0, 2^32 - 1] (``inrdiag.seeds``), refused
    with the range outside it (torch's CPU generator would silently use only the low 32 bits)."""
    return Annotated[
        int,
        typer.Option("--seed", help=f"{help} An integer in [0, 2^32 - 1].", callback=_seed_in_range,
                     rich_help_panel=panel),
    ]  # fmt: skip


#: The loading options every MODEL-taking command accepts, in --help order: (parameter name, annotated type).
#: Adding an option here (and a field of the same name to ``inrdiag.layouts.LoadOptions``) adds it to
#: every command; commands never list these parameters themselves.
LOADING_OPTIONS: list[tuple[str, Any]] = [
    ("activation", ActivationOpt),
    ("w0", W0Opt),
    ("w0_hidden", W0HiddenOpt),
    ("encoding", EncodingOpt),
    ("frequencies", FrequenciesOpt),
    ("head", HeadOpt),
]


@dataclass(frozen=True)
class Loading:
    """The loading flags of one command invocation, collected by ``with_loading`` (built once)."""

    options: dict[str, Any] = field(default_factory=dict)

    def load(self, model: str):
        """Load ``model`` with these flags (see ``inrdiag.layouts.LoadOptions``)."""
        from ..layouts import LoadOptions
        from ..loader import load

        return load(str(user_path(model)), LoadOptions(**{k: v for k, v in self.options.items() if v is not None}))


def with_loading(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared loading options: it declares ``loading: Loading`` and receives them as one object.

    The command's signature, as Typer sees it, is its own parameters (``loading`` removed) followed by
    every entry of ``LOADING_OPTIONS`` as a keyword option defaulting to None.
    """
    hints = get_type_hints(func, include_extras=True)
    sig = inspect.signature(func)
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values() if p.name != "loading"
    ]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann)
             for name, ann in LOADING_OPTIONS]  # fmt: skip
    names = [name for name, _ in LOADING_OPTIONS]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opts = {name: kwargs.pop(name, None) for name in names}
        return func(*args, loading=Loading(opts), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*own, *extra], return_annotation=sig.return_annotation)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
    return wrapper


def load_model(model: str, loading: Loading | None = None):
    """Load a checkpoint with a command's loading flags (none: the file alone decides)."""
    return (loading or Loading()).load(model)


def show(json: bool, data, renderer: str, *args) -> None:
    """Print ``data`` (a dict) as the only JSON on stdout, or render with ``report.<module>:<function>(*args)``.

    The renderer is named, not passed, so rich and the report module load only when a table is shown.
    """
    if json:
        from ..report.common import emit_json

        emit_json(data)
    else:
        import importlib

        module, func = renderer.split(":")
        getattr(importlib.import_module(f"..report.{module}", __package__), func)(*args)


def check_outputs(force: bool, inputs: tuple | list = (), **paths: str | None) -> None:
    """Before any work, refuse: existing outputs (without --force), two outputs on one path, an output that is
    one of ``inputs`` (the same file after links, whatever --force says), a missing or unwritable folder."""
    from ..errors import InrdiagError
    from ..io import check_not_input, check_writable

    given = {k: p for k, p in paths.items() if p}
    seen: dict[str, str] = {}
    for name, p in given.items():
        check_not_input(user_path(p), inputs, name)
        path = check_writable(p, force)
        key = str(path.resolve())
        if key in seen:
            raise InrdiagError(f"{seen[key]} and {name} both write {p}; give different paths")
        seen[key] = name


def user_path(path: str):
    """A path given on the command line, ``~`` expanded (also inside ``--opt=~/x``, which shells leave as is)."""
    from ..io import user_path as _user_path

    return _user_path(path)


@contextmanager
def progress_bar(transient: bool = False, disable: bool = False) -> Iterator[Any]:
    """A rich progress bar on stderr (description, bar, n/total, an ``info`` field, elapsed time).

    When the command fails or is interrupted the bar is erased and rich's closing newline skipped, so the
    one line ``error: ...`` stays the only thing a failed command leaves on stderr.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..report.common import console

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), console=console(stderr=True), transient=transient, disable=disable)  # fmt: skip
    bar.start()
    try:
        yield bar
    except BaseException:
        if not bar.disable:
            bar.live.transient = True
            bar.live.stop()
        raise
    bar.stop()
