"""Forward hooks for the adapter's passes, and the small module utilities around them.

``hooks`` registers forward ("post") and forward-pre ("pre") hooks for one block and removes them on
exit, also when the forward raises; ``Stop`` ends a forward early once a capture hook has what it
needs. ``cast_module`` casts a module's tensors without dropping the imaginary part of complex ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

#: A hook registration: (module, "pre" or "post", the hook function, called with kwargs).
Hook = tuple[nn.Module, str, Callable[..., Any]]


class Stop(BaseException):
    """Raised by a capture hook to end a forward pass early (a BaseException, so ``except Exception``
    in user code does not swallow it)."""


@contextmanager
def hooks(registrations: list[Hook]) -> Iterator[None]:
    """Register forward ("post") and forward-pre ("pre") hooks (kwargs-aware); removed on exit, also
    when the forward raises."""
    handles = []
    try:
        for module, kind, fn in registrations:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def first_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The input tensor of a linear call (positional or ``input=``)."""
    return args[0] if args else kwargs.get("input")


def replace_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], z: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with its input replaced by ``z``."""
    if args:
        return (z, *args[1:]), kwargs
    return args, {**kwargs, "input": z}


def reaches(start: Any, target: Any) -> bool:
    """Whether autograd node ``target`` is an ancestor of (or is) node ``start``."""
    if start is None or target is None:
        return False
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node is target:
            return True
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(fn for fn, _ in node.next_functions)
    return False


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode for the block; each one's own flag restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, t in flags:
            m.training = t


def module_dtype(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The real floating dtype and the device of the module's first floating or complex tensor."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.is_floating_point():
            return t.dtype, t.device
        if t.is_complex():
            return t.real.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def cast_module(module: nn.Module, device: torch.device | str | None, dtype: torch.dtype) -> nn.Module:
    """``module`` with floating tensors in ``dtype`` and complex ones in its complex counterpart, in place.

    (``nn.Module.to(torch.float64)`` would cast complex weights to real, dropping the imaginary part.)"""
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    module.to(device=device)
    for t in [*module.parameters(), *module.buffers()]:
        if t.is_floating_point():
            t.data = t.data.to(dtype)
        elif t.is_complex():
            t.data = t.data.to(cdtype)
    return module
