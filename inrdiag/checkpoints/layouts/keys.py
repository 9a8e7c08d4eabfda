"""Key paths of a state dict: ordering module paths, numbered containers, the linear chain's paths."""

from __future__ import annotations

import re

import torch

#: Module names that mark an output head, sorted after numbered layers (siren-pytorch: last_layer).
HEAD_NAMES = {"last_layer", "output", "out", "head", "final", "output_linear", "fc_out", "last",
              "output_layer", "out_layer", "final_layer", "to_out"}  # fmt: skip


def parts(path: str) -> list[str]:
    """The dotted components of a key or module path."""
    return path.split(".")


def numbered(paths: list[str], container: str | None, suffix: tuple[str, ...]) -> bool:
    """Every path ends in ``[container.]{i}{.suffix}`` (``i`` a number)."""
    n = len(suffix) + 1 + (container is not None)
    for fp in paths:
        p = parts(fp)
        if len(p) < n or tuple(p[len(p) - len(suffix) :]) != suffix:
            return False
        i = p[len(p) - len(suffix) - 1]
        if not i.isdigit() or (container is not None and p[len(p) - len(suffix) - 2] != container):
            return False
    return True


def natural(part: str) -> tuple[int | str, ...]:
    """Sort key of one path component: its runs of digits compared as numbers (``fc10`` after ``fc9``)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part) if t != "")


def path_key(path: str) -> tuple[tuple[int, tuple[int | str, ...]], ...]:
    """Sort key of a module path: numbers numerically, output-head names after everything else."""
    return tuple((1 if p in HEAD_NAMES else 0, natural(p)) for p in path.split("."))


def linear_paths(tensors: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
    """Module paths (under ``prefix``) holding a 2-D ``weight`` (out, in): the linear layers, in chain order."""
    paths = [k[: -len(".weight")] for k, t in tensors.items()
             if k.startswith(prefix) and k.endswith(".weight") and t.ndim == 2]  # fmt: skip
    return sorted(paths, key=path_key)


def group(path: str) -> tuple[str, int | None]:
    """(container, index) of a layer path: the part before its first number, and that number."""
    p = path.split(".")
    i = next((j for j, t in enumerate(p) if t.isdigit()), None)
    if i is None:
        return ".".join(p[:-1]), None
    return ".".join(p[:i]), int(p[i])
