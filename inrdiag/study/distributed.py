"""torch.distributed plumbing for studies: the launch environment, the process group, shards, gathers.

A study is launched with ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), or as ``--jobs N`` local worker processes that form the same kind of
gloo group on 127.0.0.1. Backend: NCCL when the rank uses a CUDA device, gloo on the CPU. Each rank
takes its local GPU (``cuda:LOCAL_RANK``) or ``cores / LOCAL_WORLD_SIZE`` CPU threads.

The group's timeout is long (``INRDIAG_DIST_TIMEOUT`` seconds, default 7 days): ranks that finish
their shard early wait for the others at the final gather, which may take hours. A rank that dies
does not leave the others hanging: torchrun stops the whole group when one worker fails (and the
``--jobs`` parent does the same); the finished jobs are already on disk.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..device import resolve_device
from ..errors import InrdiagError

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 7 * 24 * 3600


@dataclass
class Rank:
    """Where this process sits in the study: rank, world size, its device and CPU threads."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None
    device: str = "cpu"
    threads: int | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def launched_by_torchrun() -> bool:
    """True under ``torchrun`` (or any launcher setting WORLD_SIZE > 1 and RANK)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        raise InrdiagError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} is not an integer") from None


def _timeout() -> timedelta:
    raw = os.environ.get("INRDIAG_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        return timedelta(seconds=float(raw))
    except ValueError:
        raise InrdiagError(f"INRDIAG_DIST_TIMEOUT={raw!r} is not a number of seconds") from None


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise InrdiagError(f"torchrun environment incomplete: {name} is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise InrdiagError(f"{name}={raw!r} is not an integer") from None


def device_for(device: str, local_rank: int, local_world: int, threads: int | None) -> tuple[str, str, int | None]:
    """(backend, device, threads) of a rank: NCCL and ``cuda:LOCAL_RANK`` when CUDA is used, else
    gloo and the CPU with ``threads`` or ``cores / local_world`` threads."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise InrdiagError(f"local rank {local_rank} has no GPU: this node has {n}; use --nproc-per-node {n}")
        torch.cuda.set_device(local_rank)
        return "nccl", f"cuda:{local_rank}", threads
    return "gloo", "cpu", threads or max(1, cores() // max(1, local_world))


def init_from_env(device: str = "auto", threads: int | None = None) -> Rank:
    """Join the process group torchrun described in the environment (``env://`` rendezvous)."""
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    backend, dev, th = device_for(device, local_rank, local_world, threads)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=_timeout())
    return Rank(rank, world, local_rank, local_world, backend, dev, th)


def init_local(rank: int, world: int, port: int, device: str = "cpu", threads: int | None = None) -> Rank:
    """Join a gloo group of ``world`` local processes on 127.0.0.1:``port`` (``--jobs N``, tests)."""
    backend, dev, th = device_for(device, rank, world, threads)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=_timeout())  # fmt: skip
    return Rank(rank, world, rank, world, backend, dev, th)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shard(items: list[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s share of ``items``: every ``world``-th item from ``rank`` (deterministic,
    balanced to within one item)."""
    return items[rank::world]


def broadcast(obj: Any, r: Rank) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not r.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, r: Rank) -> list | None:
    """Every rank's ``obj`` on rank 0 (in rank order), None on the others."""
    if not r.distributed:
        return [obj]
    out = [None] * r.world if r.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather(obj: Any, r: Rank) -> list:
    """Every rank's ``obj`` on every rank, in rank order."""
    if not r.distributed:
        return [obj]
    out: list = [None] * r.world
    dist.all_gather_object(out, obj)
    return out


def finish(r: Rank, ok: bool = True) -> None:
    """Leave the process group: after a last barrier when this rank succeeded (so no rank exits under
    another's collective); at once after an error (the launcher then stops the other ranks)."""
    if r.distributed and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def group(r: Rank) -> Iterator[Rank]:
    """``with group(rank):`` ... leaves the process group as ``finish`` does, on success or error."""
    try:
        yield r
    except BaseException:
        finish(r, ok=False)
        raise
    finish(r, ok=True)
