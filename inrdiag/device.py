"""Device choice shared by every command: ``auto`` takes CUDA when present, else the CPU."""

from __future__ import annotations

from .errors import InrdiagError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto"):
    import torch

    if name not in DEVICES and not name.startswith("cuda:"):
        raise InrdiagError(f"unknown --device {name!r}; allowed: auto, cpu, cuda, cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InrdiagError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)
