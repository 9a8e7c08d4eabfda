"""The Typer app object and the options every command shares (declared once, used everywhere).

Nothing here imports torch: heavy imports live inside command bodies so ``inrdiag --help`` is fast.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer
from typer.models import OptionInfo

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from rich.progress import Progress
    from typer.core import TyperGroup

    from ..checkpoints.load import Loaded
    from ..models.usercode import UserLoaded

app = typer.Typer(
    name="inrdiag",
    help="Diagnostics for coordinate MLPs (implicit neural representations): why an INR fits badly "
    "and what to change.\n\nExit codes: 0 ok; 1 a `check` threshold failed; 2 bad input or usage (one line "
    "`error: ...` on stderr); 70 internal error, i.e. a bug in inrdiag (please report it; INRDIAG_DEBUG=1 prints "
    "the traceback); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): no partial output is left.",
    add_completion=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"inrdiag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


LOADING = "Model loading (what shapes cannot tell)"

ModelArg = Annotated[
    str,
    typer.Argument(help="Checkpoint: .safetensors (inrdiag or plain), .pt/.pth/.ckpt state dict.", show_default=False),
]
ActivationOpt = Annotated[
    str | None,
    typer.Option(
        "--activation",
        help="Hidden activation: relu|sine|finer|gauss|tanh|gelu|softplus|leaky_relu|sigmoid|selu|elu.",
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
OutActivationOpt = Annotated[
    str | None,
    typer.Option(
        "--out-activation",
        help="Activation after the output layer: none|sine|sigmoid|tanh|relu|... (sine uses the hidden w0).",
        rich_help_panel=LOADING,
        show_default=False,
    ),
]
PeConventionOpt = Annotated[
    str | None,
    typer.Option(
        "--pe-convention",
        help="Positional encoding formula: nerf-siren (SIREN/WIRE PosEncodingNeRF) | finer (FINER PEMLP) | "
        "nerfstudio (NeRFEncoding) | inrdiag.",
        rich_help_panel=LOADING,
        show_default=False,
    ),
]
PeMinExpOpt = Annotated[
    float | None,
    typer.Option(
        "--pe-min-exp",
        help="nerfstudio NeRFEncoding: min_freq_exp (lowest frequency 2^e).",
        rich_help_panel=LOADING,
        show_default=False,
    ),
]
PeMaxExpOpt = Annotated[
    float | None,
    typer.Option(
        "--pe-max-exp",
        help="nerfstudio NeRFEncoding: max_freq_exp (highest frequency 2^e).",
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
CODE = "Your own model code (runs your Python file)"
ModelCodeOpt = Annotated[
    str | None,
    typer.Option(
        "--model-code",
        help="Build the model with your own code, FILE.py:Class or package.module:factory, and load the "
        "checkpoint into it strictly. This imports and runs that Python code; nothing is imported without "
        "this flag.",
        rich_help_panel=CODE,
        show_default=False,
    ),
]
ModelArgsOpt = Annotated[
    str | None,
    typer.Option(
        "--model-args",
        help="Arguments for --model-code as JSON: an object of keyword arguments ('{\"hidden_features\": 256}') "
        "or a list of positional ones.",
        rich_help_panel=CODE,
        show_default=False,
    ),
]
InFeaturesOpt = Annotated[
    int | None,
    typer.Option(
        "--in-features",
        help="With --model-code: the coordinate dimension d the module takes (default: the first linear "
        "layer's input width, right when there is no encoding before it).",
        rich_help_panel=CODE,
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present) | cpu | cuda.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]


def _plot_path(value: str | None) -> str | None:
    """--plot: refuse an extension other than .png/.pdf/.svg before any work."""
    if value is not None and value.lower().rsplit(".", 1)[-1] not in ("png", "pdf", "svg"):
        raise typer.BadParameter(f"{value}: give a .png, .pdf or .svg path (the extension picks the format)")
    return value


PlotOpt = Annotated[
    str | None,
    typer.Option("--plot", help="Write a plot here: .png, or .pdf/.svg (vector).", show_default=False,
                 callback=_plot_path),
]  # fmt: skip
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


def seed_param(help: str, panel: str | None = None) -> OptionInfo:
    """The one ``--seed`` option of every command: an integer in [0, 2^32 - 1] (``inrdiag.seeds``), refused
    with the range outside it (torch's CPU generator would silently use only the low 32 bits).

    A command module declares its alias with its own help text, as a type alias type checkers read::

        SeedOpt = Annotated[int, seed_param("Seed of the init and the batch sampling.")]
    """
    return typer.Option("--seed", help=f"{help} An integer in [0, 2^32 - 1].", callback=_seed_in_range,
                        rich_help_panel=panel)  # fmt: skip


#: The loading options every MODEL-taking command accepts, in --help order: (parameter name, annotated type).
#: Adding an option here (and a field of the same name to ``inrdiag.checkpoints.layouts.LoadOptions``) adds it to
#: every command; commands never list these parameters themselves.
LOADING_OPTIONS: list[tuple[str, Any]] = [
    ("activation", ActivationOpt),
    ("w0", W0Opt),
    ("w0_hidden", W0HiddenOpt),
    ("encoding", EncodingOpt),
    ("frequencies", FrequenciesOpt),
    ("pe_convention", PeConventionOpt),
    ("pe_min_exp", PeMinExpOpt),
    ("pe_max_exp", PeMaxExpOpt),
    ("out_activation", OutActivationOpt),
    ("head", HeadOpt),
    ("model_code", ModelCodeOpt),
    ("model_args", ModelArgsOpt),
    ("in_features", InFeaturesOpt),
]
#: Options that belong to --model-code, not to ``LoadOptions``.
CODE_OPTIONS = ("model_code", "model_args", "in_features")


@dataclass(frozen=True)
class Loading:
    """The loading flags of one command invocation, collected by ``with_loading`` (built once)."""

    options: dict[str, Any] = field(default_factory=dict)

    def load(self, model: str) -> Loaded | UserLoaded:
        """Load ``model`` with these flags: through the user's code with --model-code, else
        ``inrdiag.load`` (see ``inrdiag.checkpoints.layouts.LoadOptions``)."""
        from ..errors import InrdiagError

        given = {k: v for k, v in self.options.items() if v is not None}
        code = given.pop("model_code", None)
        args = given.pop("model_args", None)
        in_features = given.pop("in_features", None)
        if code is None:
            for name, value in (("--model-args", args), ("--in-features", in_features)):
                if value is not None:
                    raise InrdiagError(f"{name} applies only with --model-code FILE.py:Class")
            from ..checkpoints.layouts import LoadOptions
            from ..checkpoints.load import load

            return load(str(user_path(model)), LoadOptions(**given))
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise InrdiagError(f"{flags}: with --model-code the architecture is your code's; drop {flags}")
        if in_features is not None and in_features < 1:
            raise InrdiagError(f"--in-features must be >= 1, got {in_features}")
        from ..models.usercode import ModelCode, load_user_model

        return load_user_model(str(user_path(model)), ModelCode.parse(code, args), in_features=in_features)


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


def load_model(model: str, loading: Loading | None = None) -> Loaded | UserLoaded:
    """Load a checkpoint with a command's loading flags (none: the file alone decides)."""
    return (loading or Loading()).load(model)


def show(json: bool, data: dict[str, Any], render: Callable[..., None], *args: Any) -> None:
    """Print ``data`` (a dict) as the only JSON on stdout, or call ``render(*args)`` to draw the table.

    Commands import their renderer from ``report/`` inside the command body, so rich and the report
    modules load only when a command runs, never for ``--help``.
    """
    if json:
        from ..report.common import emit_json

        emit_json(data)
    else:
        render(*args)
        from .. import threads

        choice = threads.LAST
        if choice is not None and choice.source == "load policy" and choice.threads < choice.cpus:
            from ..report.common import console

            console().print(f"note: {choice.describe()}", markup=False)


def wrote(json: bool, what: str, path: str | None) -> None:
    """Say ``wrote <what>: PATH`` after the table (not with --json: stdout is JSON only)."""
    if path and not json:
        from ..report.common import console

        console().print(f"wrote {what}: {path}")


def check_outputs(force: bool, inputs: Sequence[str | os.PathLike[str] | None] = (), /, **paths: str | None) -> None:
    """Before any work, refuse: existing outputs (without --force), two outputs on one path, an output that is
    one of ``inputs`` (the same file after links, whatever --force says), a missing or unwritable folder.

    ``paths``: output paths by the flag that names them (``**{"--plot": plot}``); None or "" is not given."""
    from ..errors import InrdiagError
    from ..files import check_not_input, check_writable

    given = {k: p for k, p in paths.items() if p}
    seen: dict[str, str] = {}
    for name, p in given.items():
        check_not_input(user_path(p), inputs, name)
        path = check_writable(p, force)
        key = str(path.resolve())
        if key in seen:
            raise InrdiagError(f"{seen[key]} and {name} both write {p}; give different paths")
        seen[key] = name


#: What --help shows after an option that takes a value, by parameter name (set once here, for every command):
#: paths say what they name, numbers and words their role. Flags show nothing.
METAVARS = {
    "model": "MODEL", "target": "TARGET", "folder": "DIR", "cohort": "FILE", "load_sae_dir": "DIR",
    "out": "PATH", "output": "FILE", "plot": "FILE", "policy": "FILE", "atoms_png": "FILE", "recon": "FILE",
    "save": "FILE", "test": "DIR", "dest": "DIR", "device": "auto|cpu|cuda", "activation": "NAME", "encoding": "NAME",
    "dtype": "float64|float32", "method": "auto|exact|lanczos", "kind": "topk|relu", "init": "NAME",
    "inits": "A,B,...", "scheme": "NAME", "backbone": "NAME", "w0": "W0", "w0_hidden": "W0",
    "lr": "LR", "tol": "TOL", "head": "D", "layer": "K", "k": "K", "l1": "COEF",
}  # fmt: skip
_BY_TYPE = {"int": "N", "float": "X", "str": "TEXT"}


#: Per command: (the one-line summary in ``inrdiag --help``, one example shown at the end of its --help).
#: Examples use the sample data as ``inrdiag examples examples`` writes it, so they run from any folder.
HELP = {
    "info": ("What was loaded: format, layout, layers, unused tensors.",
             ["inrdiag info examples/checkpoints/siren_3x64.safetensors"]),
    "rank": ("Weight stable ranks, layer spectra, freeze depth.",
             ["inrdiag rank examples/checkpoints/relu_4x256.safetensors --plot rank.png"]),
    "check": ("CI gate on rank thresholds (exit 0 pass, 1 fail, 2 bad input).",
              ["inrdiag check examples/checkpoints/relu_4x256.safetensors", "--min-weight-stable-rank 10"]),
    "ntk": ("Empirical NTK spectrum and its exact layer-wise split.",
            ["inrdiag ntk examples/checkpoints/siren_3x64.safetensors", "--target examples/images/camera.png",
             "--plot ntk.png"]),
    "fit": ("Fit an image or occupancy grid from a chosen inlet init.",
            ["inrdiag fit examples/images/camera.png --init rank-expand --steps 300", "-o fit.safetensors",
             "--plot fit.png"]),
    "compare": ("The same budget under several inits and seeds, one table.",
                ["inrdiag compare examples/images/camera.png --inits default,rank-expand", "--seeds 2 --steps 300"]),
    "reinit": ("Re-initialise only the inlet of a checkpoint.",
               ["inrdiag reinit examples/checkpoints/relu_4x256.safetensors", "--scheme rank-expand -o re.safetensors"]),
    "cohort-train": ("One shared encoder and one head per image, trained jointly.",
                     ["inrdiag cohort-train examples/cohort -o cohort.safetensors --steps 300"]),
    "freeze-sweep": ("Fit held-out images with k = 0..K encoder layers frozen.",
                     ["inrdiag freeze-sweep examples/cohort --steps 100 --plot sweep.png"]),
    "sae": ("Sparse autoencoder on a layer's activations, atoms, ablations.",
            ["inrdiag sae fit.safetensors --layer 1 --atoms 1024 --atoms-png atoms.png"]),
    "examples": ("Copy the bundled sample data into a folder.", ["inrdiag examples examples"]),
}  # fmt: skip


def finish_help(group: TyperGroup) -> None:
    """One place for what --help shows beyond each command's own text: the summary line, one example,
    and metavars (below)."""
    for name, cmd in group.commands.items():
        if name in HELP:
            summary, lines = HELP[name]
            cmd.short_help = summary
            example = " \\\n      ".join(lines)
            cmd.help = f"{(cmd.help or '').rstrip()}\n\n\b\nExample:\n  {example}"
    apply_metavars(group)


def apply_metavars(group: TyperGroup) -> None:
    """Give every value-taking parameter of every command a metavar (``METAVARS``, else N / X / TEXT by type);
    an argument shows its metavar alone (no ``<str>`` after it)."""
    for cmd in group.commands.values():
        for p in cmd.params:
            if p.metavar is not None or getattr(p, "is_flag", False) or p.name == "help":
                continue
            kind = p.bare_type() if hasattr(p, "bare_type") else ""
            p.metavar = METAVARS.get(p.name) or _BY_TYPE.get(kind) or "VALUE"
            if p.param_type_name == "argument":
                p.display_type_rich = lambda ctx: None  # type: ignore[attr-defined]  # typer's per-argument hook


def user_path(path: str) -> Path:
    """A path given on the command line, ``~`` expanded (also inside ``--opt=~/x``, which shells leave as is)."""
    from ..files import user_path as _user_path

    return _user_path(path)


@contextmanager
def progress_bar(transient: bool = False, disable: bool = False) -> Iterator[Progress]:
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
