"""How many CPU threads a command uses: the CPUs this process may run on, less those other work keeps busy.

PyTorch starts one intra-op thread per core. On a machine where another CPU-bound process is running,
that is one thread more than there are free cores, and the threads of a parallel GEMM then wait on
each other at every barrier (issue 15 measured the README's main job at 2 min 44 s instead of ~30 s
with one other busy process on this 2-core machine). So by default inrdiag counts

- the CPUs it may run on: the affinity mask (``os.sched_getaffinity``), capped by a cgroup CPU quota
  (``/sys/fs/cgroup/cpu.max``, as containers and CI runners set), and
- the CPUs that other work keeps busy: the kernel's count of runnable tasks (``procs_running`` in
  ``/proc/stat``, sampled a few times over ~40 ms, median), less this process itself,

and uses ``max(1, usable - busy)`` threads. ``--threads N`` (or ``INRDIAG_THREADS=N``, or an explicit
``OMP_NUM_THREADS``) decides instead. Measured on this machine: the thread count changes a fit's
timing, not its numbers (the same seed gives bitwise the same fit with 1 and 2 threads, 64x64 and 96x96
images, widths 128 and 256; ``tests/test_threads.py`` keeps checking it), so the policy does not cost
reproducibility.

Nothing here imports torch: the choice is made before torch loads (``OMP_NUM_THREADS``), so it also
covers torch's own thread pool start-up.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass

from .errors import InrdiagError

#: Environment variable that fixes the thread count for every inrdiag command.
ENV = "INRDIAG_THREADS"
#: The choice the CLI made for this process (None: none made, e.g. library use).
LAST: ThreadChoice | None = None


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count chosen and why."""

    threads: int
    #: CPUs this process may use (affinity mask, cgroup quota).
    cpus: int
    #: CPUs seen busy with other work when the choice was made (None when not measured).
    busy: int | None
    #: "flag --threads", "INRDIAG_THREADS", "OMP_NUM_THREADS" or "load policy".
    source: str

    def describe(self) -> str:
        if self.source != "load policy":
            return f"{self.threads} CPU thread(s) ({self.source})"
        busy = f"{self.busy} busy with other work" if self.busy else "none busy"
        return f"{self.threads} CPU thread(s) of {self.cpus} usable CPUs ({busy}; --threads N overrides)"

    def to_dict(self) -> dict[str, object]:
        return {"threads": self.threads, "cpus": self.cpus, "busy": self.busy, "source": self.source}


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup (quota / period), or None when unlimited or unknown."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            q = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            p = int(f.read())
        if q > 0 and p > 0:
            return q / p
    except (OSError, ValueError):
        pass
    return None


def runnable_tasks(samples: int = 5, interval: float = 0.01) -> int | None:
    """Median count of runnable tasks on the machine (``procs_running``; includes this process)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith("procs_running"):
                        counts.append(int(line.split()[1]))
                        break
        except (OSError, ValueError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return int(statistics.median(counts)) if counts else None


def parse_threads(value: str | int, source: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InrdiagError(f"{source} must be a whole number >= 1, got {value!r}") from None
    if n < 1:
        raise InrdiagError(f"{source} must be >= 1, got {n}")
    return n


def choose_threads(requested: int | None = None, environ: dict[str, str] | None = None) -> ThreadChoice:
    """The thread count for this process (see the module docstring for the rule)."""
    env = os.environ if environ is None else environ
    cpus = usable_cpus()
    if requested is not None:
        return ThreadChoice(parse_threads(requested, "--threads"), cpus, None, "flag --threads")
    if env.get(ENV):
        return ThreadChoice(parse_threads(env[ENV], ENV), cpus, None, ENV)
    if env.get("OMP_NUM_THREADS"):
        return ThreadChoice(parse_threads(env["OMP_NUM_THREADS"], "OMP_NUM_THREADS"), cpus, None, "OMP_NUM_THREADS")
    running = runnable_tasks()
    busy = 0 if running is None else max(0, running - 1)  # this process is one of the runnable tasks
    return ThreadChoice(max(1, cpus - busy), cpus, None if running is None else busy, "load policy")


def apply_before_torch(choice: ThreadChoice) -> None:
    """Fix torch's intra-op thread count before torch is imported (through ``OMP_NUM_THREADS``)."""
    os.environ["OMP_NUM_THREADS"] = str(choice.threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(choice.threads))


def apply(choice: ThreadChoice) -> None:
    """Set torch's intra-op thread count now (torch already imported)."""
    import torch

    torch.set_num_threads(choice.threads)
