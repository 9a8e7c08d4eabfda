"""What ``compare`` and ``freeze-sweep`` share as studies: options, the progress bar over jobs, outputs.

No command is defined here; the commands live beside their single-run forms (cli/fit.py,
cli/cohort.py) and call these helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.progress import TaskID

    from ..study.jobs import Job, StepProgress
    from ..study.runner import JobProgress, Outcome

STUDY = "Studies (resumable, parallel)"

OutDirOpt = Annotated[
    str | None,
    typer.Option("--out", help="Run folder: one record per finished job; rerunning the same command resumes.",
                 rich_help_panel=STUDY, show_default=False),
]  # fmt: skip
FromOpt = Annotated[
    str | None,
    typer.Option("--from", help="Rebuild the report from a run folder alone (no fitting).", rich_help_panel=STUDY,
                 show_default=False),
]  # fmt: skip
JobsOpt = Annotated[
    int,
    typer.Option("--jobs", help="Local CPU worker processes (each with cores/N threads); multi-GPU or multi-node: "
                 "torchrun (docs/studies.md).", rich_help_panel=STUDY),
]  # fmt: skip
MaxJobsOpt = Annotated[
    int | None,
    typer.Option("--max-jobs", help="Run at most N new jobs, then stop (rerun to continue).", rich_help_panel=STUDY,
                 show_default=False),
]  # fmt: skip
SeedsOpt = Annotated[int, typer.Option("--seeds", help="Seeds per init (seed, seed+1, ...).")]
CsvOpt = Annotated[
    str | None,
    typer.Option("--csv", help="Write one row per run (tidy CSV).", show_default=False),
]


def is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


@contextmanager
def job_progress(enabled: bool = True) -> Iterator[tuple[JobProgress | None, StepProgress | None]]:
    """A rich progress bar over jobs on stderr, with the running job's steps below it.

    Yields ``(on_job, on_step)`` callbacks for ``inrdiag.study.runner.run_study``. The bar appears at
    the first callback (after the run folder was checked), so a refused study prints only its error.
    Under torchrun only rank 0 draws (its own shard)."""
    if not enabled or not is_rank0():
        yield None, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..report.common import console

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), console=console(stderr=True), transient=False)  # fmt: skip
    tasks: dict[str, TaskID] = {}

    def started() -> None:
        if "jobs" not in tasks:
            bar.start()
            tasks["jobs"] = bar.add_task("jobs", total=None, info="")

    def on_job(done: int, total: int, label: str) -> None:
        started()
        bar.update(tasks["jobs"], completed=done, total=total, info=f"last: {label}" if label else "")

    def on_step(job: Job, step: int, n: int, loss: float, metric: float) -> None:
        started()
        if "steps" not in tasks:
            tasks["steps"] = bar.add_task("", total=n, info="")
        bar.update(tasks["steps"], description=f"  {job.label}", completed=step, total=n, info=f"loss {loss:.3g}")

    try:
        yield on_job, on_step
    finally:
        if tasks:
            bar.stop()


def pending_message(outcome: Outcome) -> dict[str, Any]:
    """What a study with jobs still pending reports (``--max-jobs``): how many are done, where."""
    done = outcome.done_before + outcome.ran
    return {"complete": False, "done": done, "total": outcome.total, "ran_now": outcome.ran,
            "run_dir": outcome.run_dir,
            "message": f"{done} of {outcome.total} jobs finished in {outcome.run_dir}; "
                       "rerun the same command to continue"}  # fmt: skip


def show_pending(json: bool, outcome: Outcome) -> None:
    """Print ``pending_message`` (as the only JSON with ``--json``)."""
    info = pending_message(outcome)
    if json:
        from ..report.common import emit_json

        emit_json(info)
    else:
        from ..report.common import console

        console().print(info["message"])
