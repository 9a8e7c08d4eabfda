"""inrdiag: diagnostics for coordinate MLPs (implicit neural representations).

The public surface is re-exported here lazily, so ``import inrdiag`` (and ``inrdiag --help``)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArchSpec": "models.spec",
    "CoordMLP": "models.mlp",
    "InrdiagError": "errors",
    "ModuleError": "errors",
    "ModuleAdapter": "models.adapter",
    "as_adapter": "models.adapter",
    "ModelCode": "models.usercode",
    "load_user_model": "models.usercode",
    "UserLoaded": "models.usercode",
    "rank_rows": "tables",
    "to_dataframe": "tables",
    "write_csv": "tables",
    "choose_threads": "threads",
    "LoadOptions": "checkpoints.layouts",
    "Loaded": "checkpoints.load",
    "load": "checkpoints.load",
    "save": "checkpoints.save",
    "make_grid": "grid",
    "rank_report": "spectra",
    "RankReport": "spectra",
    "spectrum_stats": "spectra",
    "weight_stable_rank": "spectra",
    "run_checks": "checks",
    "CheckPolicy": "checks",
    "ntk_report": "ntk.kernel",
    "NTKReport": "ntk.kernel",
    "GroupNTK": "ntk.kernel",
    "layer_factors": "ntk.factors",
    "Factor": "ntk.factors",
    "topk_eigh": "ntk.eigen",
    "load_target": "fitting.targets",
    "Target": "fitting.targets",
    "load_signal": "signals",
    "extract_surface": "signals.mesh",
    "fit": "fitting.loop",
    "FitConfig": "fitting.loop",
    "FitResult": "fitting.loop",
    "compare": "study.single",
    "CompareResult": "study.single",
    "compare_folder": "study.api",
    "freeze_folder": "study.api",
    "load_study": "study.api",
    "CompareStudy": "study.compare_study",
    "FreezeStudy": "study.freeze_study",
    "RunDir": "study.rundir",
    "run_study": "study.runner",
    "summarize": "study.stats",
    "paired": "study.stats",
    "build_model": "models.inits",
    "reinit_inlet": "models.inits",
    "SCHEMES": "models.inits",
    "SAEConfig": "sae.model",
    "train_sae": "sae.model",
    "save_sae": "sae.saelens",
    "load_sae": "sae.saelens",
    "sample_data_dir": "sample_data",
    "write_examples": "sample_data",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'inrdiag' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
