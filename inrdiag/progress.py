"""The one progress-callback type of inrdiag's training loops (fit, cohort training, freeze sweeps,
SAEs): ``progress(step, total, loss, metric)`` after a step, ``metric`` NaN when the loop has none.
The engine never prints; the CLI passes a callback that draws a bar (``cli.app.progress_bar``)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, float, float], None]
