"""Dense symmetric eigensolves of the NTK's small matrices (Rayleigh-Ritz matrices, Grams), on one thread
when they are small."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

#: Dense symmetric eigensolves up to this size run on one thread: a thread barrier per Householder step
#: costs more than it saves there (measured: 384 x 384 with MKL's two threads on a shared 2-core machine
#: 0.15-6 s, one thread 0.03-0.09 s).
SINGLE_THREAD_EIGH = 1024


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` intra-op threads (at most the current count), then restore the count."""
    before = torch.get_num_threads()
    if n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Eigh:
    """Eigenvalues (ascending, like torch) and unit eigenvectors (columns) of a symmetric matrix."""

    values: Tensor
    vectors: Tensor


def _one_thread_if_small(H: Tensor) -> int:
    return 1 if H.shape[-1] <= SINGLE_THREAD_EIGH else torch.get_num_threads()


def dense_eigh(H: Tensor) -> Eigh:
    """``torch.linalg.eigh`` of a symmetric matrix, on one thread when it is at most ``SINGLE_THREAD_EIGH``
    wide."""
    with _threads(_one_thread_if_small(H)):
        w, V = torch.linalg.eigh(H)
    return Eigh(values=w, vectors=V)


def dense_eigvalsh(H: Tensor) -> Tensor:
    """``torch.linalg.eigvalsh`` (ascending), on one thread when at most ``SINGLE_THREAD_EIGH`` wide."""
    with _threads(_one_thread_if_small(H)):
        return torch.linalg.eigvalsh(H)
