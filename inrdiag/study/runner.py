"""Run a study's pending jobs: in this process, in ``--jobs N`` local workers, or across torchrun ranks.

The one rule in every mode: a job that finishes is written to the run folder at once (atomically),
and a job that has a record is never run again. So Ctrl-C, a crash or a dead rank loses only the
jobs in flight, and rerunning the same command resumes.

- One process: jobs in order, with per-job and per-step progress callbacks.
- ``workers = N`` (CPU): N spawned processes form a gloo group on 127.0.0.1, each takes every N-th
  pending job with ``cores / N`` threads, and writes its records; the parent shows progress by
  counting records and reads them back at the end. Without ``--out`` a temporary folder is used.
- Under torchrun: rank 0 opens (or checks) the run folder and lists the pending jobs; the list is
  broadcast, every rank runs its shard (``pending[rank::world]``) and writes records, and rank 0
  gathers every new record with ``gather_object`` too (so a run folder that only rank 0 can see
  still ends up complete) and returns them all. The other ranks return None.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from ..device import resolve_device
from ..errors import InrdiagError
from . import distributed as D
from .jobs import Job, StepProgress, run_job
from .rundir import SCHEMA, RunDir, RunDirError, first_difference

#: on_job(done, total, label): called after each job this process finished (and once at the start).
JobProgress = Callable[[int, int, str], None]


@dataclass
class Outcome:
    """What a run left: every record of the study (on rank 0), and how many jobs ran now."""

    records: dict[str, dict[str, Any]] | None
    total: int
    done_before: int
    ran: int
    world: int = 1
    main: bool = True
    seconds: float = 0.0
    run_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.records is not None and len(self.records) == self.total


def _normal(x: Any) -> Any:
    return json.loads(json.dumps(x, allow_nan=True))


def pending_jobs(jobs: list[Job], records: dict[str, dict[str, Any]], run_dir: str | None = None) -> list[Job]:
    """Jobs without a record; a record whose job config differs from the job's is refused."""
    by_key = {j.key: j for j in jobs}
    where = run_dir or "the run folder"
    for key, rec in records.items():
        if key not in by_key:
            raise RunDirError(f"{where}/jobs/{key}.json is not a job of this study; use another --out")
        diff = first_difference(rec["job"], _normal(by_key[key].config))
        if diff is not None:
            f, a, b = diff
            raise RunDirError(f"{where}/jobs/{key}.json was run with {f} = {a}, this study has {b}; "
                              "use another --out")  # fmt: skip
    return [j for j in jobs if j.key not in records]


def _record(job: Job, result: dict[str, Any], r: D.Rank, seconds: float) -> dict[str, Any]:
    return {"schema": SCHEMA, "key": job.key, "job": _normal(job.config), "result": result,
            "run": {"rank": r.rank, "world": r.world, "device": r.device, "threads": r.threads,
                    "host": socket.gethostname(), "seconds": seconds}}  # fmt: skip


def _run_list(jobs: list[Job], rd: RunDir | None, r: D.Rank, on_job: JobProgress | None,
              on_step: StepProgress | None) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for i, job in enumerate(jobs):
        t0 = time.perf_counter()
        result = run_job(job, r.device, r.threads, on_step)
        rec = _record(job, result, r, time.perf_counter() - t0)
        if rd is not None:
            rd.write(rec)
        out.append(rec)
        if on_job is not None:
            on_job(i + 1, len(jobs), job.label)
    return out


def run_study(
    jobs: list[Job],
    kind: str,
    config: dict[str, Any],
    out: str | None = None,
    *,
    device: str = "auto",
    threads: int | None = None,
    workers: int = 1,
    max_jobs: int | None = None,
    on_job: JobProgress | None = None,
    on_step: StepProgress | None = None,
) -> Outcome:
    """Run the jobs of a study (``kind``/``config`` name it in ``out``/study.json) that have no record.

    ``max_jobs`` stops after that many new jobs (the rest stays pending for a rerun). Under torchrun
    (WORLD_SIZE > 1 in the environment) the jobs are sharded over the ranks; ``workers > 1`` runs
    them in that many local CPU processes.
    """
    if len({j.key for j in jobs}) != len(jobs):
        raise InrdiagError("two jobs of the study have the same key")  # pragma: no cover
    if max_jobs is not None and max_jobs < 0:
        raise InrdiagError(f"--max-jobs must be >= 0, got {max_jobs}")
    if workers < 1:
        raise InrdiagError(f"--jobs must be >= 1, got {workers}")
    if D.launched_by_torchrun():
        if workers > 1:
            raise InrdiagError("--jobs N starts local workers; under torchrun use --nproc-per-node instead")
        return _run_torchrun(jobs, kind, config, out, device, threads, max_jobs, on_job)
    t0 = time.perf_counter()
    rd = RunDir.open(out, kind, config) if out else None
    records = rd.records() if rd else {}
    todo = pending_jobs(jobs, records, out)
    before = len(records)
    if max_jobs is not None:
        todo = todo[:max_jobs]
    if on_job is not None:
        on_job(0, len(todo), "")
    if workers > 1 and todo:
        new = _run_workers(todo, kind, config, rd, device, threads, workers, on_job)
    else:
        r = D.Rank(device=str(_resolve(device)), threads=threads)
        new = _run_list(todo, rd, r, on_job, on_step)
    records.update({rec["key"]: rec for rec in new})
    return Outcome(records, len(jobs), before, len(new), workers, True, time.perf_counter() - t0, out)


def _resolve(device: str) -> torch.device:
    return resolve_device(device)


# ---------------------------------------------------------------- torchrun
def _run_torchrun(jobs: list[Job], kind: str, config: dict[str, Any], out: str | None, device: str,
                  threads: int | None, max_jobs: int | None, on_job: JobProgress | None) -> Outcome:  # fmt: skip
    t0 = time.perf_counter()
    r = D.init_from_env(device, threads)
    with D.group(r):
        msg: tuple[str, Any]
        records: dict[str, dict[str, Any]] = {}
        if r.main:
            try:
                rd0 = RunDir.open(out, kind, config) if out else None
                records = rd0.records() if rd0 else {}
                keys = [j.key for j in pending_jobs(jobs, records, out)]
                msg = ("ok", keys[:max_jobs] if max_jobs is not None else keys)
            except InrdiagError as exc:
                msg = ("error", str(exc))
        else:
            msg = ("", None)
        msg = D.broadcast(msg, r)
        if msg[0] == "error":
            raise InrdiagError(msg[1])
        by_key = {j.key: j for j in jobs}
        todo = [by_key[k] for k in msg[1]]
        mine = D.shard(todo, r.rank, r.world)
        rd = None
        if out:
            rd = RunDir(out, kind, config)
            rd.jobs_dir.mkdir(parents=True, exist_ok=True)  # a node that does not share the folder
        new = _run_list(mine, rd, r, on_job if r.main else None, None)
        gathered = D.gather(new, r)
        outcome = Outcome(None, len(jobs), len(records), len(todo), r.world, r.main, 0.0, out)
        if r.main:
            for part in gathered or []:
                for rec in part:
                    if rd is not None and not rd.record_path(rec["key"]).exists():
                        rd.write(rec)
                    records[rec["key"]] = rec
            outcome.records = records
        outcome.seconds = time.perf_counter() - t0
    return outcome


# ---------------------------------------------------------------- --jobs N
def _worker(rank: int, world: int, port: int, jobs: list[Job], run_path: str, kind: str,
            config: dict[str, Any], device: str, threads: int | None) -> None:  # fmt: skip
    """One ``--jobs`` worker (spawned): join the local gloo group, run its shard, write records."""
    r = D.init_local(rank, world, port, device, threads)
    with D.group(r):
        rd = RunDir(run_path, kind, config)
        _run_list(D.shard(jobs, rank, world), rd, r, None, None)


def _spawn(workers: int, todo: list[Job], rd: RunDir, kind: str, config: dict[str, Any],
           th: int) -> mp.ProcessContext:  # fmt: skip
    """Start the workers with OMP/MKL_NUM_THREADS = th in their environment (as torchrun sets it), so
    their thread pools start at that size; this process's environment is restored at once."""
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: str(th) for k in saved})
    try:
        return mp.start_processes(_worker, args=(workers, D.free_port(), todo, str(rd.path), kind, config, "cpu", th),
                                  nprocs=workers, join=False, start_method="spawn")  # fmt: skip
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_workers(todo: list[Job], kind: str, config: dict[str, Any], rd: RunDir | None, device: str,
                 threads: int | None, workers: int, on_job: JobProgress | None) -> list[dict[str, Any]]:  # fmt: skip
    if str(_resolve(device)) != "cpu":
        raise InrdiagError("--jobs N runs CPU workers; on GPUs launch with torchrun --nproc-per-node N")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if rd is None:
        tmp = tempfile.TemporaryDirectory(prefix="inrdiag-study-")
        rd = RunDir.open(Path(tmp.name) / "run", kind, config)
    th = threads or max(1, D.cores() // workers)
    keys = {j.key for j in todo}
    start = {k for k in rd.records() if k in keys}
    try:
        ctx = _spawn(workers, todo, rd, kind, config, th)
        try:
            seen = 0
            while not ctx.join(timeout=0.5):
                n = sum(1 for k in keys if rd.record_path(k).exists()) - len(start)
                if on_job is not None and n != seen:
                    seen = n
                    on_job(n, len(todo), "")
        except mp.ProcessRaisedException as exc:
            last = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            line = last[-1] if last else str(exc)
            m = re.match(r"^[\w.]*(Error|Exception): (.*)$", line)
            raise InrdiagError(m.group(2) if m and "inrdiag" in line else f"a --jobs worker failed: {line}") from None
        except mp.ProcessExitedException as exc:
            raise InrdiagError(f"a --jobs worker died ({exc}); rerun to resume") from None
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
        recs = rd.records()
        if on_job is not None:
            on_job(len(todo), len(todo), "")
        return [recs[k] for k in (j.key for j in todo) if k in recs]
    finally:
        if tmp is not None:
            tmp.cleanup()
