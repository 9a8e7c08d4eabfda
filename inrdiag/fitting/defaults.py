"""Defaults of ``FitConfig`` (and so of ``inrdiag fit``/``compare``), in a module without torch so the
CLI can show them in ``--help`` without importing the engine."""

from __future__ import annotations

#: Largest grid fitted full-batch by default (points); larger targets use sampled batches.
FULL_BATCH_MAX = 2**17
SAMPLED_BATCH = 2**16
#: Default size of the network: 3 hidden layers of 128 ReLU units (about 35 s for 1000 full-batch
#: steps on a 128x128 image on a 2-core CPU).
DEFAULT_DEPTH = 3
DEFAULT_WIDTH = 128
DEFAULT_STEPS = 1000
DEFAULT_LR = 1e-3
#: The inlet scheme of a fit (``inrdiag.models.inits.SCHEMES``).
DEFAULT_INIT = "rank-expand"
#: ``compare``: the inits compared and the seeds per init.
DEFAULT_COMPARE_INITS = ("default", "rank-expand", "pe", "siren", "bn")
DEFAULT_SEEDS = 3
