"""inrdiag: diagnostics for coordinate MLPs (implicit neural representations).

The public surface is re-exported here lazily, so ``import inrdiag`` (and ``inrdiag --help``)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArchSpec": "spec",
    "CoordMLP": "model",
    "InrdiagError": "errors",
    "ModuleError": "errors",
    "ModuleAdapter": "adapter",
    "as_adapter": "adapter",
    "ModelCode": "usercode",
    "load_user_model": "usercode",
    "UserLoaded": "usercode",
    "rank_rows": "tables",
    "to_dataframe": "tables",
    "write_csv": "tables",
    "choose_threads": "threads",
    "LoadOptions": "layouts",
    "Loaded": "loader",
    "load": "loader",
    "save": "checkpoint",
    "make_grid": "grid",
    "rank_report": "spectra",
    "RankReport": "spectra",
    "spectrum_stats": "spectra",
    "weight_stable_rank": "spectra",
    "run_checks": "checks",
    "CheckPolicy": "checks",
    "ntk_report": "ntk",
    "NTKReport": "ntk",
    "GroupNTK": "ntk",
    "layer_factors": "ntk_factors",
    "Factor": "ntk_factors",
    "topk_eigh": "ntk_eig",
    "load_target": "targets",
    "Target": "targets",
    "load_signal": "signals",
    "extract_surface": "signals.mesh",
    "fit": "fitting",
    "FitConfig": "fitting",
    "FitResult": "fitting",
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
    "build_model": "inits",
    "reinit_inlet": "inits",
    "SCHEMES": "inits",
    "SAEConfig": "sae",
    "train_sae": "sae",
    "save_sae": "sae_io",
    "load_sae": "sae_io",
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
