"""Device choice shared by every command: ``auto`` takes CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from .errors import InrdiagError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device ``name`` names: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N``."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise InrdiagError(f"unknown --device {name!r}; allowed: auto, cpu, cuda, cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InrdiagError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def tune_malloc() -> bool:
    """On glibc, stop returning large freed blocks to the OS (``M_MMAP_MAX=0``, a 2 GiB
    ``M_TRIM_THRESHOLD``), so full-batch activation buffers are reused instead of being unmapped
    and page-faulted back every step (DESIGN.md section 5). Process-wide; returns whether applied.
    The price: the process keeps up to its peak heap instead of shrinking after large frees."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
