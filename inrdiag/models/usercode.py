"""The user's own model code: build their ``nn.Module`` and load a checkpoint into it strictly.

``--model-code models.py:Siren`` (a file) or ``--model-code mypkg.models:make_siren`` (an importable
module) names a class or a factory; ``--model-args '{"hidden_features": 256}'`` gives its keyword
arguments as a JSON object (a JSON list gives positional arguments). This *runs the user's Python
code*, which is why it happens only when the flag is given.

The checkpoint's tensors are matched to ``module.state_dict()`` by name, after the same wrapper
handling as every other load (``state_dict``/``model_state``/... entries and prefixes such as
``module.`` or ``_orig_mod.``): the prefix is chosen so that every key the module expects is found.
Loading is strict: a key the module expects but the file lacks, or a tensor of another shape, is an
error listing them; tensors in the file that the module does not use are listed by ``info``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from ..checkpoints.layouts import TensorInfo
from ..checkpoints.read import read_checkpoint
from ..errors import CheckpointError, InrdiagError
from ..files import atomic_write
from .inits import InitError, rank_expand_points, rank_expand_weights, siren_bounds

if TYPE_CHECKING:
    from .adapter import ModuleAdapter


class ModelCodeError(InrdiagError):
    """The user's model code could not be imported, found, or called as asked."""


@dataclass(frozen=True)
class ModelCode:
    """Where the user's model comes from: ``target`` is ``FILE.py:Name`` or ``package.module:Name``."""

    target: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, target: str, args_json: str | None = None) -> ModelCode:
        """Parse ``--model-code`` and ``--model-args`` (JSON object: kwargs; JSON list: positional)."""
        if not isinstance(target, str) or ":" not in target or target.endswith(":") or target.startswith(":"):
            raise ModelCodeError(
                f"--model-code {target!r}: expected FILE.py:Name or package.module:Name (a class or a factory)"
            )
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        if args_json is not None:
            try:
                value = json.loads(args_json)
            except json.JSONDecodeError as exc:
                raise ModelCodeError(f"--model-args is not valid JSON ({exc.msg} at character {exc.pos})") from None
            if isinstance(value, dict):
                kwargs = value
            elif isinstance(value, list):
                args = tuple(value)
            else:
                raise ModelCodeError(
                    f"--model-args must be a JSON object (keyword arguments) or a list (positional), "
                    f"got {type(value).__name__}"
                )
        return cls(target, args, kwargs)

    @property
    def module_part(self) -> str:
        return self.target.rsplit(":", 1)[0]

    @property
    def name(self) -> str:
        return self.target.rsplit(":", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "args": list(self.args), "kwargs": self.kwargs}


def _import_file(path: Path) -> ModuleType:
    """Import a Python file as a fresh module; its folder is importable while it runs (sibling imports)."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"inrdiag_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelCodeError(f"--model-code: cannot import {path} as Python code")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise ModelCodeError(f"--model-code: importing {path} raised {_describe(exc)}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def _some(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def resolve_callable(code: ModelCode) -> Callable[..., Any]:
    """The class or factory that ``code`` names (imports the user's file or module)."""
    part = code.module_part
    if part.endswith(".py") or os.sep in part or "/" in part:
        path = Path(part).expanduser()
        if not path.is_file():
            raise ModelCodeError(f"--model-code: {path}: no such file")
        module = _import_file(path)
        where = str(path)
    else:
        try:
            module = importlib.import_module(part)
        except ImportError as exc:
            raise ModelCodeError(f"--model-code: cannot import module {part!r} ({_describe(exc)})") from None
        except Exception as exc:  # the user's module raised while importing
            raise ModelCodeError(f"--model-code: importing {part!r} raised {_describe(exc)}") from None
        where = part
    obj: Any = module
    for attr in code.name.split("."):
        if not hasattr(obj, attr):
            raise ModelCodeError(
                f"--model-code: {where} has no {code.name!r}; it defines: {', '.join(_candidates(module)) or 'no nn.Module classes'}"
            )
        obj = getattr(obj, attr)
    if not callable(obj):
        raise ModelCodeError(f"--model-code: {code.target} is a {type(obj).__name__}, not a class or a factory")
    return obj


def _candidates(module: ModuleType) -> list[str]:
    """Names in ``module`` that are nn.Module subclasses defined there (for error messages)."""
    out = []
    for name, value in vars(module).items():
        if inspect.isclass(value) and issubclass(value, torch.nn.Module) and value.__module__ == module.__name__:
            out.append(name)
    return sorted(out)


def build_module(code: ModelCode) -> torch.nn.Module:
    """Call the user's class or factory with the given arguments; the result must be an ``nn.Module``."""
    factory = resolve_callable(code)
    try:
        module = factory(*code.args, **code.kwargs)
    except TypeError as exc:
        raise ModelCodeError(f"--model-code: {code.target}(...) with --model-args: {_describe(exc)}") from None
    except Exception as exc:
        raise ModelCodeError(f"--model-code: building {code.target} raised {_describe(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelCodeError(f"--model-code: {code.target} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def seeded_builder(code: ModelCode) -> Callable[[int], torch.nn.Module]:
    """``seed -> module``: the user's module built with torch's global RNG seeded by ``seed`` inside
    ``fork_rng`` (the caller's RNG state is left as it was), so each seed is one reproducible init."""

    def build(seed: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return build_module(code)

    build_module(code)  # bad code is refused before any work
    return build


@dataclass
class UserLoaded:
    """The user's module with a checkpoint loaded into it, and a record of how (what ``info`` shows)."""

    #: The user's nn.Module, in eval mode.
    model: torch.nn.Module
    path: str
    code: ModelCode
    file_format: str
    #: The prefix stripped from the file's keys to match the module's state dict ("" when none).
    prefix: str
    tensors: list[TensorInfo]
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)
    #: Display names of the linear layers: the module paths the adapter finds (None: let it name them).
    layer_keys: list[str] | None = None
    heads: int | None = None
    head: int | None = None
    shared_layers: int | None = None
    in_features: int | None = None

    @property
    def layout(self) -> str:
        return f"model code {self.code.target}"

    @property
    def sources(self) -> dict[str, str]:
        return {"architecture": f"model code {self.code.target} (--model-code)"}

    def to_dict(self) -> dict[str, Any]:
        linears = [(name, m) for name, m in self.model.named_modules() if isinstance(m, torch.nn.Linear)]
        last = len(linears) - 1
        layers = [{"index": k, "name": name, "out_features": m.out_features, "in_features": m.in_features,
                   "role": "inlet" if k == 0 else ("output head" if k == last else "hidden")}
                  for k, (name, m) in enumerate(linears)]  # fmt: skip
        return {
            "path": self.path,
            "file_format": self.file_format,
            "layout": self.layout,
            "model_code": self.code.to_dict(),
            "class": type(self.model).__qualname__,
            "prefix": self.prefix,
            "sources": self.sources,
            "layers": layers,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "tensors": [t.to_dict() for t in self.tensors],
            "unused_tensors": [t.key for t in self.tensors if not t.used],
            "nonfinite": self.nonfinite,
            "provenance": self.provenance,
            "notes": self.notes,
        }


def _flat_tensors(path: str | os.PathLike) -> tuple[dict[str, Any], str, dict[str, Any] | None, dict[str, str]]:
    """The file's tensors under their full dotted keys (wrapper prefix put back), its format, metadata,
    and what it held outside the state dict (key: why)."""
    raw = read_checkpoint(path)
    pre = raw.wrapper + "." if raw.wrapper else ""
    return {pre + k: v for k, v in raw.tensors.items()}, raw.file_format, raw.metadata, dict(raw.skipped)


def match_prefix(stored: list[str], expected: list[str]) -> tuple[str, list[str]]:
    """The prefix P such that ``P + key`` is stored for the most expected keys; (P, keys still missing).

    Candidates come from the stored keys themselves: for each expected key ``e`` found as ``P + e``.
    Ties go to the shortest prefix (the file's own top level first).
    """
    stored_set = set(stored)
    votes: dict[str, int] = {}
    for e in expected:
        for k in stored:
            if k == e or k.endswith("." + e):
                p = k[: len(k) - len(e)]
                votes[p] = votes.get(p, 0) + 1
    if not votes:
        return "", list(expected)
    best = max(votes, key=lambda p: (votes[p], -len(p)))
    return best, [e for e in expected if best + e not in stored_set]


def load_user_model(
    path: str | os.PathLike, code: ModelCode, in_features: int | None = None, strict: bool = True
) -> UserLoaded:
    """Build the user's module and load the checkpoint at ``path`` into it (strictly), in eval mode."""
    tensors, file_format, metadata, skipped = _flat_tensors(path)
    module = build_module(code)
    expected_state = module.state_dict()
    expected = list(expected_state)
    if not expected:
        raise ModelCodeError(f"--model-code: {code.target} has no parameters or buffers to load")
    prefix, missing = match_prefix(list(tensors), expected)
    # Strict in both directions: a tensor under the chosen prefix that names one of the module's own
    # children (``net.5.weight`` when the module has ``net``) but is not in its state dict means the
    # module was built with other arguments than it was trained with.
    children = {name for name, _ in module.named_children()} | {n.split(".")[0] for n in expected}
    unexpected = [k for k in tensors
                  if k.startswith(prefix) and k[len(prefix):] not in expected_state
                  and k[len(prefix):].split(".")[0] in children]  # fmt: skip
    if (missing or unexpected) and strict:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} of the {len(expected)} tensors it expects ({_some(missing)})")
        if unexpected:
            parts.append(f"the file has {len(unexpected)} it does not ({_some(unexpected)})")
        raise CheckpointError(
            f"{path}: the checkpoint does not fit {code.target}: {'; '.join(parts)}; check --model-args"
        )
    state = {}
    uses: list[TensorInfo] = []
    used_keys = {prefix + e for e in expected if prefix + e in tensors}
    wrong = []
    for e in expected:
        k = prefix + e
        if k not in tensors:
            continue
        t = tensors[k]
        want = expected_state[e]
        if list(t.shape) != list(want.shape):
            wrong.append(f"{k} {list(t.shape)} (module: {list(want.shape)})")
            continue
        if t.is_complex() != want.is_complex():
            raise CheckpointError(f"{path}: {k} is {t.dtype} but {code.target} holds {want.dtype} there; not converted")
        state[e] = t
    if wrong:
        raise CheckpointError(
            f"{path}: {len(wrong)} tensor(s) of another shape than {code.target} builds, e.g. {'; '.join(wrong[:2])}; "
            "check --model-args"
        )
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: loading into {code.target} failed ({_describe(exc)})") from None
    module.eval()
    for k, why in skipped.items():  # entries outside the chosen state dict (optimizer, metrics, ...)
        uses.append(TensorInfo(k, [], "-", False, why))
    for k, t in tensors.items():
        used = k in used_keys
        role = f"{code.name}.{k[len(prefix) :]}" if used else "not in the module's state dict"
        uses.append(TensorInfo(k, list(t.shape), str(t.dtype).replace("torch.", ""), used, role))
    notes = []
    if prefix:
        notes.append(f"checkpoint keys matched after stripping the prefix '{prefix}'")
    unused = [u.key for u in uses if not u.used]
    if unused:
        notes.append(f"{len(unused)} tensor(s) in the file are not used by the module (see the tensors table)")
    nonfinite = [
        k for k, t in module.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    provenance = {}
    if metadata and isinstance(metadata.get("provenance"), dict):
        provenance = dict(metadata["provenance"])
    return UserLoaded(
        model=module, path=str(path), code=code, file_format=file_format, prefix=prefix, tensors=uses,
        provenance=provenance, notes=notes, nonfinite=nonfinite, in_features=in_features,
    )  # fmt: skip


def reinit_user_inlet(loaded: UserLoaded, scheme: str, seed: int = 0) -> list[str]:
    """Re-initialise the inlet of the user's module — the first ``nn.Linear`` it calls — by ``scheme``.

    The same formulas as for inrdiag's own MLP (``inrdiag.models.inits``): ``default`` (torch's
    ``U(-1/sqrt(n_in), 1/sqrt(n_in))``), ``rank-expand`` (DESIGN.md section 4; only where that layer
    reads the raw coordinates, and with a bias), ``siren`` (``U(-1/n_in, 1/n_in)`` weights). The module's
    activation is the user's code: what a scheme assumes about it is returned as a note, not checked.
    """
    from .adapter import as_adapter  # the adapter takes a UserLoaded: imported here, not at the top

    return reinit_module_inlet(as_adapter(loaded), scheme, seed)


def reinit_module_inlet(ad: ModuleAdapter, scheme: str, seed: int = 0) -> list[str]:
    """``reinit_user_inlet`` on a ``ModuleAdapter`` (any module); returns the notes."""
    lin = ad.linear(0)
    name = ad.layers[0].name
    gen = torch.Generator().manual_seed(seed)
    notes = [f"re-initialised the inlet {name} ({lin.out_features} x {lin.in_features}), the first nn.Linear called"]
    with torch.no_grad():
        if scheme == "default":
            bound = 1.0 / math.sqrt(lin.in_features)
            lin.weight.uniform_(-bound, bound, generator=gen)
            if lin.bias is not None:
                lin.bias.uniform_(-bound, bound, generator=gen)
        elif scheme == "rank-expand":
            if lin.in_features != ad.in_features:
                raise InitError(
                    f"rank-expand places thresholds in coordinate space [-1,1]^{ad.in_features}, but {name} reads "
                    f"{lin.in_features} features (an encoding comes first); not defined there"
                )
            if lin.bias is None:
                raise InitError(f"rank-expand needs a bias in {name} (the thresholds are the biases)")
            W, b = rank_expand_weights(rank_expand_points(lin.out_features, lin.in_features))
            lin.weight.copy_(W.to(lin.weight.dtype))
            lin.bias.copy_(b.to(lin.bias.dtype))
            notes.append("rank-expand assumes a threshold activation (ReLU-like) after the inlet: your code decides")
        elif scheme == "siren":
            half = siren_bounds(lin.in_features, True)
            lin.weight.uniform_(-half, half, generator=gen)
            notes.append("siren's first-layer init assumes sin(w0 h) after the inlet: your code decides")
        else:
            raise InitError(f"--scheme {scheme!r} with --model-code: allowed default, rank-expand, siren")
    return notes


def save_user_state(
    loaded: UserLoaded, path: str | os.PathLike[str], provenance: dict[str, Any], force: bool = False
) -> Path:
    """Write the user's module as a plain safetensors state dict (its own key names), atomically.

    It loads back with the same ``--model-code``; the metadata key ``inrdiag_model_code`` records the
    code, its arguments and the provenance (the inrdiag format key is not used: there is no ArchSpec).
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in loaded.model.state_dict().items()}
    meta = json.dumps({"model_code": loaded.code.to_dict(), "provenance": provenance}, sort_keys=True, default=str)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"inrdiag_model_code": meta}), force)
