"""The module adapter: every diagnostic runs on any ``nn.Module`` mapping coordinates (N, d) to outputs (N, C).

``as_adapter(obj)`` runs ONE probe forward pass on a few points with forward hooks on every ``nn.Linear``
and records, in execution order, each call: its input and output shapes and where they sit in the
autograd graph. From that record:

- **layers** are the linear modules in order of their first call, named by their module path
  (``named_modules()``; for a ``Loaded`` checkpoint, its key names). The last linear called on the
  points is the output head.
- the **representation** of layer k is the input its NEXT linear call sees: ``Z_k`` (N x w). In a
  plain MLP that is ``act(W_k a + b_k)``; when the next input is wider than layer k's output (NeRF's
  skip connection concatenates the encoding), a note says what it holds. Layers called several
  times in one forward, layers whose input is not one row per point (modulators on a latent), and
  layers whose next linear does not read their output have no representation (the reason is kept).
- for the NTK, a linear layer called once per point with real weights is **exact-factor** ("linear"):
  ``A`` = its input, ``D = d f_c / d h`` from the hooked output. Every other parameter (batch norm,
  modulators, learnable w0, linears called twice or with tied or complex weights) goes the generic
  ``torch.func`` way, so ``Theta = sum of groups`` stays exact.

Partial forward passes (``features``, ``splice``, ``splice_pre``) are hooks that capture or replace a
tensor during a full forward (``models.hooks``); a sequential chain (``CoordMLP``, or an ``nn.Sequential``
of direct-child linears) runs only the layers it needs instead (``models.chains``).

The probe also checks that the module treats points independently (``f(x)[:m] == f(x[:m])``): the
batched sensitivities ``D`` are per-point only then.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..checkpoints.load import Loaded
from ..errors import ModuleError
from .chains import Chain, CoordChain, SequentialChain
from .hooks import Hook, Stop, cast_module, eval_mode, first_input, hooks, module_dtype, reaches, replace_input
from .mlp import CoordMLP
from .usercode import UserLoaded

__all__ = ["Hook", "LinearLayer", "ModuleAdapter", "Record", "Representation", "as_adapter", "cast_module", "hooks"]

#: Points of the probe forward pass: a prime, unlikely to equal a width or a latent size by chance.
PROBE_POINTS = 13
#: Points of the batch-independence check (a prefix of the probe points).
CHECK_POINTS = 5


@dataclass
class LinearLayer:
    """One ``nn.Linear`` of the module, as the probe forward found it."""

    #: Position in the order of first calls (the layer number every report uses).
    index: int
    #: Display name: the module path, or the checkpoint key a ``Loaded`` maps to it.
    name: str
    #: Module path in ``named_modules()``.
    path: str
    in_features: int
    out_features: int
    #: Calls in one forward pass.
    calls: int
    #: Every call's input is (N, in_features) and output (N, out_features), N = points.
    per_point: bool
    #: "linear" (exact factor form in the NTK) or "generic" (torch.func); ``reason`` says why generic.
    ntk_path: str
    reason: str
    module: nn.Linear = field(repr=False, compare=False)

    @property
    def has_bias(self) -> bool:
        return self.module.bias is not None


@dataclass(frozen=True)
class Representation:
    """Layer ``layer``'s representation: the input of call ``call`` of linear layer ``reader`` (N x width)."""

    layer: int
    reader: int
    call: int
    width: int
    dtype: torch.dtype
    #: Empty in a plain chain; otherwise what the input holds besides layer ``layer``'s outputs.
    note: str = ""


@dataclass
class Record:
    """Tensors one hooked forward pass saw, by layer index (exact-factor layers only).

    ``inputs[k]``: layer k's input (N x in_k, detached copy); ``outputs[k]``: its output ``h_k``
    (N x out_k, in the autograd graph of ``out``); ``out``: the module's output (N x C)."""

    inputs: dict[int, torch.Tensor]
    outputs: dict[int, torch.Tensor]
    out: torch.Tensor


@dataclass
class _Call:
    layer: int
    call: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_node: Any
    out_node: Any
    in_dtype: torch.dtype
    in_cat: bool


class ModuleAdapter:
    """Diagnostic view of ``module`` (kept as is: the adapter only adds hooks during its own passes).

    Attributes: ``module``, ``in_features`` (d), ``out_features`` (C), ``layers`` (``LinearLayer``s in
    order of first call), ``representations`` (per layer: a ``Representation`` or None, with
    ``reasons[k]`` saying why none), ``head`` (index of the output head), ``spec`` (the ArchSpec when
    the module is a CoordMLP, else None), ``shared_layers`` (a cohort's encoder depth), ``notes``.
    """

    def __init__(
        self,
        module: nn.Module,
        in_features: int | None = None,
        names: list[str] | None = None,
        shared_layers: int | None = None,
        notes: list[str] | None = None,
        strict_names: bool = True,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ModuleError(f"expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.spec = module.spec if isinstance(module, CoordMLP) else None
        self.shared_layers = shared_layers
        self.notes: list[str] = list(notes or [])
        self.kind = type(module).__name__
        paths = {id(m): p for p, m in module.named_modules() if isinstance(m, nn.Linear)}
        if not paths:
            raise ModuleError(f"{self.kind} has no nn.Linear layer: nothing for inrdiag to diagnose")
        inferred = False
        if in_features is None and self.spec is not None:
            in_features = self.spec.in_features
        elif in_features is None:
            first = next(m for m in module.modules() if isinstance(m, nn.Linear))
            in_features, inferred = int(first.in_features), True
            self.notes.append(f"in_features = {in_features}, read from the first nn.Linear ({paths[id(first)]}); "
                              "pass in_features= if the module encodes coordinates before it")  # fmt: skip
        if int(in_features) < 1:
            raise ModuleError(f"in_features must be >= 1, got {in_features}")
        self.in_features = int(in_features)
        calls, point_calls = self._probe(paths, inferred)
        self._name_layers(names, strict_names)
        self.representations: list[Representation | None] = []
        self.reasons: list[str] = []
        for layer in self.layers:
            rep, why = self._representation(layer, calls, point_calls)
            self.representations.append(rep)
            self.reasons.append(why)
        self._chain: Chain | None = (
            CoordChain(module) if self._is_coord_chain() and isinstance(module, CoordMLP)
            else SequentialChain.of(module, self.layers)
        )  # fmt: skip

    # ------------------------------------------------------------------ probe
    def _probe(self, paths: dict[int, str], inferred: bool) -> tuple[list[_Call], list[int]]:
        """One hooked forward on ``PROBE_POINTS`` seeded points in [-1, 1]^d (eval mode, flags restored):
        fills ``layers``, ``out_features``, ``head``; returns the calls and the positions of per-point ones."""
        dtype, device = module_dtype(self.module)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(PROBE_POINTS, self.in_features, generator=gen, dtype=torch.float64) * 2 - 1
        x = x.to(device=device, dtype=dtype).requires_grad_(True)
        n = PROBE_POINTS
        order: list[int] = []  # module ids by first call
        calls: list[_Call] = []
        mods = {id(m): m for m in self.module.modules() if isinstance(m, nn.Linear)}

        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            inp = first_input(args, kwargs)
            if id(mod) not in order:
                order.append(id(mod))
            layer = order.index(id(mod))
            count = sum(1 for c in calls if c.layer == layer)
            ok = isinstance(inp, torch.Tensor) and isinstance(out, torch.Tensor)
            calls.append(_Call(layer, count, tuple(inp.shape) if ok else (), tuple(out.shape) if ok else (),
                               inp.grad_fn if ok else None, out.grad_fn if ok else None,
                               inp.dtype if ok else torch.float32,
                               ok and inp.grad_fn is not None and "Cat" in type(inp.grad_fn).__name__))  # fmt: skip

        hint = (" (in_features was read from the first nn.Linear: pass in_features=d)" if inferred
                else f" (in_features={self.in_features}: is that the number of coordinates?)")  # fmt: skip
        with eval_mode(self.module), torch.enable_grad():
            try:
                with hooks([(m, "post", hook) for m in mods.values()]):
                    out = self.module(x)
            except Exception as exc:
                msg = str(exc).splitlines()[0] if str(exc) else ""
                raise ModuleError(f"{self.kind} failed on ({n}, {self.in_features}) coordinates "
                                  f"({type(exc).__name__}: {msg}){hint}") from None  # fmt: skip
            self._check_output(out, n, hint)
            self.out_features = int(out.shape[1])
            with torch.no_grad():
                self._check_independent(x.detach(), out.detach())
        layers: list[LinearLayer] = []
        tied = self._tied_linears(mods, paths)
        for i, mid in enumerate(order):
            mine = [c for c in calls if c.layer == i]
            lin = mods[mid]
            per_point = all(len(c.in_shape) == 2 and c.in_shape[0] == n and c.out_shape == (n, lin.out_features)
                            for c in mine)  # fmt: skip
            reason = ""
            if lin.weight.is_complex():
                reason = "complex weights (the generic path differentiates real and imaginary parts)"
            elif len(mine) > 1:
                reason = f"called {len(mine)} times in one forward"
            elif not per_point:
                reason = (f"its input has shape {list(mine[0].in_shape)}, not one row per point "
                          f"({n} probe points): a modulator on a latent?")  # fmt: skip
            elif mid in tied:
                reason = f"its parameters are shared with {tied[mid]}"
            layers.append(LinearLayer(i, paths[mid], paths[mid], int(lin.in_features), int(lin.out_features),
                                      len(mine), per_point, "generic" if reason else "linear", reason, lin))  # fmt: skip
        self.layers = layers
        unused = [p for mid, p in paths.items() if mid not in order]
        if unused:
            self.notes.append(f"not called by the forward pass, not analysed: {', '.join(unused)}")
        point_calls = [i for i, c in enumerate(calls) if layers[c.layer].per_point]
        if not point_calls:
            raise ModuleError(f"{self.kind}: no nn.Linear is applied to the points one row per point")
        first = layers[calls[point_calls[0]].layer]
        if inferred and first.module is not next(m for m in self.module.modules() if isinstance(m, nn.Linear)):
            raise ModuleError(f"in_features = {self.in_features} was read from an nn.Linear that is not the first "
                              f"one applied to the points ({first.path} is): pass in_features=d")  # fmt: skip
        self.head = calls[point_calls[-1]].layer
        self._input_width = int(calls[point_calls[0]].in_shape[1])
        return calls, point_calls

    def _check_output(self, out: Any, n: int, hint: str) -> None:
        if isinstance(out, (tuple, list, dict)):
            raise ModuleError(f"{self.kind} returns a {type(out).__name__}; inrdiag needs one (N, C) tensor "
                              "(wrap the module so forward returns it)")  # fmt: skip
        if not isinstance(out, torch.Tensor):
            raise ModuleError(f"{self.kind} returns {type(out).__name__}, not a tensor of shape (N, C)")
        if out.dim() != 2 or out.shape[0] != n:
            raise ModuleError(f"{self.kind} maps ({n}, {self.in_features}) coordinates to shape {list(out.shape)}; "
                              f"inrdiag needs (N, C) outputs, e.g. (N, 1) rather than (N,){hint}")  # fmt: skip
        if out.is_complex():
            raise ModuleError(f"{self.kind} returns complex outputs ({out.dtype}); return a real tensor "
                              "(e.g. .real) so the diagnostics have a real function")  # fmt: skip

    def _check_independent(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """Points are independent: with the last rows of the batch replaced by other points, the first
        ``CHECK_POINTS`` outputs stay the same (same batch shape, so the same kernels: expected bit
        for bit; rounding-level changes are tolerated). Also runs one point alone (the generic NTK
        path evaluates points one at a time). Skipped when the output is not finite: the diagnostics
        then stop at their own finiteness checks."""
        m = CHECK_POINTS
        try:
            one = self.module(x[:1])
        except Exception as exc:
            raise ModuleError(f"{self.kind} failed on 1 point ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); inrdiag evaluates any number "
                              "of points, one at a time in the generic NTK path") from None  # fmt: skip
        if not isinstance(one, torch.Tensor) or tuple(one.shape) != (1, out.shape[1]):
            raise ModuleError(f"{self.kind} maps 1 point to {type(one).__name__} of shape "
                              f"{list(getattr(one, 'shape', []))}, not [1, {out.shape[1]}]")  # fmt: skip
        if not bool(torch.isfinite(out).all()):
            return
        other = x.clone()
        other[m:] = -x[m:].flip(0)
        part = self.module(other)[:m]
        diff = float((part - out[:m]).abs().max())
        if not diff <= 1e3 * torch.finfo(out.dtype).eps * (float(out.abs().max()) + 1e-30):
            raise ModuleError(f"{self.kind}'s output at a point depends on the other points of the batch "
                              f"(changed by {diff:.3g} when the other points changed): batch statistics or "
                              "attention across points; inrdiag needs f(x_n) to depend on x_n only (eval mode)")  # fmt: skip

    def _tied_linears(self, mods: dict[int, nn.Linear], paths: dict[int, str]) -> dict[int, str]:
        """Linear modules owning a parameter registered under more than one name -> the other names."""
        names: dict[int, list[str]] = {}
        for name, p in self.module.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
        out: dict[int, str] = {}
        for mid, lin in mods.items():
            for p in lin.parameters(recurse=False):
                others = [n for n in names.get(id(p), []) if n.rsplit(".", 1)[0] != paths[mid]]
                if others:
                    out[mid] = ", ".join(others)
        return out

    def _representation(
        self, layer: LinearLayer, calls: list[_Call], point_calls: list[int]
    ) -> tuple[Representation | None, str]:
        """(Representation, "") for layer k, or (None, why not)."""
        k = layer.index
        if k == self.head:
            return None, "output head (its output is the network's output)"
        if layer.calls > 1:
            return None, f"called {layer.calls} times in one forward: its input is not one representation"
        if not layer.per_point:
            return None, "not applied one row per point"
        at = next(i for i in point_calls if calls[i].layer == k)
        nxt = calls[next(i for i in point_calls if i > at)]
        reader = self.layers[nxt.layer]
        if not reaches(nxt.in_node, calls[at].out_node):
            return None, f"the next linear layer called ({reader.name}) does not read {layer.name}'s output"
        width = nxt.in_shape[1]
        note = ""
        if width > layer.out_features:
            how = "concatenated" if nxt.in_cat else "combined"
            note = (f"input of {reader.name} is {width} wide: {layer.name}'s {layer.out_features} outputs + "
                    f"{width - layer.out_features} other features ({how})")  # fmt: skip
        elif width < layer.out_features:
            note = f"input of {reader.name} is {width} wide, narrower than {layer.name}'s {layer.out_features} outputs"
        return Representation(k, nxt.layer, nxt.call, width, nxt.in_dtype, note), ""

    def _name_layers(self, names: list[str] | None, strict: bool) -> None:
        if names is None:
            return
        if len(names) != len(self.layers):
            if strict:
                raise ModuleError(f"{len(names)} layer names given for {len(self.layers)} linear layers "
                                  f"({', '.join(layer.path for layer in self.layers)})")  # fmt: skip
            self.notes.append(f"{len(names)} layer names for {len(self.layers)} linear layers called: layers are "
                              "named by module path")  # fmt: skip
            return
        for layer, name in zip(self.layers, names):
            layer.name = str(name)

    def _is_coord_chain(self) -> bool:
        m = self.module
        return isinstance(m, CoordMLP) and type(m).forward is CoordMLP.forward and len(self.layers) == len(m.linears)

    # ------------------------------------------------------------------ structure
    @property
    def is_coord_mlp(self) -> bool:
        return self.spec is not None

    @property
    def is_chain(self) -> bool:
        """True when partial passes run only the layers they need (CoordMLP, plain nn.Sequential)."""
        return self._chain is not None

    @property
    def dtype(self) -> torch.dtype:
        """The real floating dtype of the module's tensors (float32 for complex64)."""
        return module_dtype(self.module)[0]

    @property
    def hidden(self) -> list[int]:
        """Layers with a representation (the freeze and SAE candidates)."""
        return [k for k, r in enumerate(self.representations) if r is not None]

    @property
    def input_width(self) -> int:
        """Width of the first linear layer applied to the points (``gamma(x)``'s width)."""
        return self._input_width

    @property
    def exact_layers(self) -> list[int]:
        """Layers in the exact factor form of the NTK."""
        return [layer.index for layer in self.layers if layer.ntk_path == "linear"]

    def linear(self, k: int) -> nn.Linear:
        return self.layers[k].module

    def representation(self, k: int) -> Representation:
        """Layer k's representation, or a ModuleError saying why it has none."""
        if not 0 <= k < len(self.layers):
            raise ModuleError(f"layer {k} is out of range 0..{len(self.layers) - 1}")
        rep = self.representations[k]
        if rep is None:
            raise ModuleError(f"layer {k} ({self.layers[k].name}) has no representation: {self.reasons[k]}")
        return rep

    def copy(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ModuleAdapter:
        """An adapter on a deep copy of the module, cast to ``dtype`` on ``device``, in eval mode."""
        try:
            m = copy.deepcopy(self.module)
        except Exception as exc:
            raise ModuleError(f"{self.kind} cannot be copied for the diagnostics (deepcopy: {exc})") from None
        if dtype is None:
            m.to(device=device)
        else:
            cast_module(m, device, dtype)
        m.eval()
        first = [n for n in self.notes if n.startswith("in_features = ")]
        return ModuleAdapter(m, self.in_features, [layer.name for layer in self.layers], self.shared_layers, first)

    def structure_notes(self) -> list[str]:
        """What the probe found that a reader should know: in_features' source, concatenated inputs,
        layers without a representation, parameters on the generic NTK path."""
        notes = list(self.notes)
        notes += [r.note for r in self.representations if r is not None and r.note]
        for k, (r, why) in enumerate(zip(self.representations, self.reasons)):
            if r is None and k != self.head:
                notes.append(f"layer {k} ({self.layers[k].name}): no representation: {why}")
        return notes

    # ------------------------------------------------------------------ passes
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def record(self, x: torch.Tensor) -> Record:
        """One forward pass keeping each exact-factor layer's input and output (see ``Record``).

        The hook hands the rest of the forward a clone of each output, so an in-place activation
        (``ReLU(inplace=True)``) cannot overwrite the recorded ``h_k``."""
        inputs: dict[int, torch.Tensor] = {}
        outputs: dict[int, torch.Tensor] = {}

        def make(k: int) -> Callable[..., torch.Tensor]:
            def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor) -> torch.Tensor:
                inputs[k] = first_input(args, kwargs).detach().clone()
                outputs[k] = out
                return out.clone()

            return hook

        regs: list[Hook] = [(self.linear(k), "post", make(k)) for k in self.exact_layers]
        with hooks(regs):
            out = self.module(x)
        self._check_output(out, x.shape[0], "")
        return Record(inputs, outputs, out)

    def _capture_regs(self, ks: list[int], got: dict[int, torch.Tensor], stop_after: int) -> list[Hook]:
        """Pre-hooks storing layer k's representation in ``got[k]`` for k in ``ks``; the forward stops
        (``Stop``) once ``stop_after`` are in. Captures are copies unless the stop follows at once,
        so an in-place op later in the forward cannot change them."""
        want: dict[int, list[tuple[int, int]]] = {}
        for k in ks:
            r = self.representation(k)
            want.setdefault(r.reader, []).append((r.call, k))
        regs: list[Hook] = []
        for reader, pairs in want.items():
            counter = [0]

            def hook(
                mod: nn.Module,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
                pairs: list[tuple[int, int]] = pairs,
                counter: list[int] = counter,
            ) -> None:
                c = counter[0]
                counter[0] += 1
                for call, k in pairs:
                    if call == c:
                        inp = first_input(args, kwargs)
                        got[k] = inp if len(got) + 1 == stop_after else inp.clone()
                if len(got) == stop_after:
                    raise Stop

            regs.append((self.linear(reader), "pre", hook))
        return regs

    def features(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``Z_k`` (N x width): layer k's representation on the points ``x`` (N x d)."""
        self.representation(k)
        if self._chain is not None:
            return self._chain.features(x, k)
        got: dict[int, torch.Tensor] = {}
        with hooks(self._capture_regs([k], got, stop_after=1)):
            try:
                self.module(x)
            except Stop:
                pass
        if k not in got:
            raise ModuleError(f"the forward pass on these points did not reach layer {k}'s reader as in the probe")
        return got[k]

    def all_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every representation on the points ``x`` from one forward pass: layer index -> Z_k."""
        ks = self.hidden
        if self._chain is not None:
            return self._chain.all_features(x)
        got: dict[int, torch.Tensor] = {}
        with hooks(self._capture_regs(ks, got, stop_after=len(ks))):
            try:
                self.module(x)
            except Stop:
                pass
        missing = [k for k in ks if k not in got]
        if missing:
            raise ModuleError(f"the forward pass on these points did not reach the readers of layers {missing}")
        return got

    def _need_x(self, x: torch.Tensor | None, what: str) -> torch.Tensor:
        if x is None:
            raise ModuleError(f"{what} on {self.kind} re-runs the whole forward pass: pass the points x")
        return x

    def splice(self, x: torch.Tensor | None, k: int, z: torch.Tensor) -> torch.Tensor:
        """``f(x)`` with layer k's representation replaced by ``z`` (rows aligned with ``x``).

        Chains run only the layers after k (``x`` may be None); otherwise a pre-hook swaps the input of
        the reading linear call during a full forward pass on ``x``."""
        rep = self.representation(k)
        if self._chain is not None:
            return self._chain.splice(k, z)
        x = self._need_x(x, "splice")
        counter = [0]

        def hook(
            mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            c = counter[0]
            counter[0] += 1
            if c != rep.call:
                return None
            inp = first_input(args, kwargs)
            if inp.shape != z.shape:
                raise ModuleError(f"splice: z has shape {list(z.shape)}, layer {k}'s representation {list(inp.shape)}")
            return replace_input(args, kwargs, z)

        with hooks([(self.linear(rep.reader), "pre", hook)]):
            out = self.module(x)
        if counter[0] <= rep.call:
            raise ModuleError(f"the forward pass on these points did not reach layer {k}'s reader as in the probe")
        return out

    def splice_pre(self, x: torch.Tensor | None, k: int, P: torch.Tensor) -> torch.Tensor:
        """``f(x)`` with linear layer k's output ``h_k`` replaced by ``P`` (N x out_k); k is called once
        per point. Chains run only the layers after k."""
        layer = self.layers[k]
        if layer.calls != 1 or not layer.per_point:
            raise ModuleError(f"layer {k} ({layer.name}) is not called once per point: its output cannot be replaced")
        if self._chain is not None:
            return self._chain.splice_pre(k, P)
        x = self._need_x(x, "splice_pre")

        fired: list[bool] = []

        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor) -> torch.Tensor:
            fired.append(True)
            if out.shape != P.shape:
                raise ModuleError(f"splice_pre: P has shape {list(P.shape)}, layer {k}'s output {list(out.shape)}")
            return P.clone()  # an in-place activation after the layer must not change the caller's P

        with hooks([(layer.module, "post", hook)]):
            out = self.module(x)
        if not fired:
            raise ModuleError(f"the forward pass on these points did not call layer {k} as in the probe")
        return out


def as_adapter(
    obj: Any,
    in_features: int | None = None,
    names: list[str] | None = None,
    shared_layers: int | None = None,
) -> ModuleAdapter:
    """A ``ModuleAdapter`` for a CoordMLP, any ``nn.Module``, an ``inrdiag.Loaded`` (its model, with its
    checkpoint key names and cohort encoder depth), a model built by ``--model-code``
    (``inrdiag.models.usercode.UserLoaded``) or an adapter (returned as is).

    ``in_features`` (d): given, else a CoordMLP's spec, else the first ``nn.Linear``'s ``in_features``
    (a note says so; a module that encodes coordinates before its first linear layer must be given d).
    """
    if isinstance(obj, ModuleAdapter):
        if in_features is not None and in_features != obj.in_features:
            raise ModuleError(f"in_features={in_features} given for an adapter built with {obj.in_features}")
        if names is not None and list(names) != [layer.name for layer in obj.layers]:
            return ModuleAdapter(obj.module, obj.in_features, names, obj.shared_layers, obj.notes)
        return obj
    if isinstance(obj, UserLoaded):  # the user's own module (--model-code): its names, its d when given
        d = in_features if in_features is not None else obj.in_features
        shared = obj.shared_layers if shared_layers is None else shared_layers
        return ModuleAdapter(obj.model, d, names, shared, list(obj.notes))
    if isinstance(obj, Loaded):
        shared = obj.shared_layers if shared_layers is None else shared_layers
        if names is not None:
            return ModuleAdapter(obj.model, in_features, names, shared)
        return ModuleAdapter(obj.model, in_features, list(obj.layer_keys), shared, strict_names=False)
    if isinstance(obj, nn.Module):
        return ModuleAdapter(obj, in_features, names, shared_layers)
    raise ModuleError(f"expected a torch.nn.Module, an inrdiag.Loaded or a ModuleAdapter, got {type(obj).__name__}")
