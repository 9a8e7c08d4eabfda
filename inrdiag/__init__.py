"""inrdiag: diagnostics for coordinate MLPs (implicit neural representations).

The public surface is re-exported here lazily, so ``import inrdiag`` (and ``inrdiag --help``)
does not import torch: ``_EXPORTS`` maps each name to its module, imported on first access
(``__getattr__``). Type checkers and editors read the ``TYPE_CHECKING`` imports below instead,
which name the same objects (tests/test_cli_core.py checks that both list the same names from
the same modules), so ``inrdiag.rank_report`` has its real signature, not ``Any``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    "LoadOptions": "checkpoints.layouts.options",
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
    "NTKConfig": "ntk.config",
    "run_ntk": "ntk.analysis",
    "NTKAnalysis": "ntk.analysis",
    "target_ntk": "ntk.target",
    "TargetNTK": "ntk.target",
    "load_target": "fitting.targets",
    "Target": "fitting.targets",
    "load_signal": "signals",
    "extract_surface": "signals.mesh",
    "adam_loop": "fitting.optim",
    "train_cohort": "cohort.train",
    "load_cohort": "cohort.train",
    "save_cohort": "cohort.train",
    "CohortTrainResult": "cohort.train",
    "LoadedCohort": "cohort.train",
    "CohortRecipe": "cohort.recipe",
    "read_cohort": "cohort.file",
    "CohortFile": "cohort.file",
    "freeze_sweep": "cohort.freeze",
    "SweepReport": "cohort.freeze",
    "EncoderFit": "cohort.freeze",
    "train_folder": "cohort.folders",
    "sweep_folder": "cohort.folders",
    "resolve_recipe": "cohort.folders",
    "split_images": "cohort.folders",
    "find_cohort_checkpoint": "cohort.folders",
    "SweepRun": "cohort.folders",
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
    "SAEConfig": "sae.config",
    "train_sae": "sae.model",
    "SparseAutoencoder": "sae.model",
    "TrainedSAE": "sae.model",
    "LoadedSAE": "sae.saelens",
    "run_sae": "sae.run",
    "SAERun": "sae.run",
    "save_sae": "sae.saelens",
    "load_sae": "sae.saelens",
    "sample_data_dir": "sample_data",
    "write_examples": "sample_data",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # the same names from the same modules as _EXPORTS (``name as name``: an explicit re-export)
    from .checkpoints.layouts.options import LoadOptions as LoadOptions
    from .checkpoints.load import Loaded as Loaded
    from .checkpoints.load import load as load
    from .checkpoints.save import save as save
    from .checks import CheckPolicy as CheckPolicy
    from .checks import run_checks as run_checks
    from .cohort.file import CohortFile as CohortFile
    from .cohort.file import read_cohort as read_cohort
    from .cohort.folders import SweepRun as SweepRun
    from .cohort.folders import find_cohort_checkpoint as find_cohort_checkpoint
    from .cohort.folders import resolve_recipe as resolve_recipe
    from .cohort.folders import split_images as split_images
    from .cohort.folders import sweep_folder as sweep_folder
    from .cohort.folders import train_folder as train_folder
    from .cohort.freeze import EncoderFit as EncoderFit
    from .cohort.freeze import SweepReport as SweepReport
    from .cohort.freeze import freeze_sweep as freeze_sweep
    from .cohort.recipe import CohortRecipe as CohortRecipe
    from .cohort.train import CohortTrainResult as CohortTrainResult
    from .cohort.train import LoadedCohort as LoadedCohort
    from .cohort.train import load_cohort as load_cohort
    from .cohort.train import save_cohort as save_cohort
    from .cohort.train import train_cohort as train_cohort
    from .errors import InrdiagError as InrdiagError
    from .errors import ModuleError as ModuleError
    from .fitting.loop import FitConfig as FitConfig
    from .fitting.loop import FitResult as FitResult
    from .fitting.loop import fit as fit
    from .fitting.optim import adam_loop as adam_loop
    from .fitting.targets import Target as Target
    from .fitting.targets import load_target as load_target
    from .grid import make_grid as make_grid
    from .models.adapter import ModuleAdapter as ModuleAdapter
    from .models.adapter import as_adapter as as_adapter
    from .models.inits import SCHEMES as SCHEMES
    from .models.inits import build_model as build_model
    from .models.inits import reinit_inlet as reinit_inlet
    from .models.mlp import CoordMLP as CoordMLP
    from .models.spec import ArchSpec as ArchSpec
    from .models.usercode import ModelCode as ModelCode
    from .models.usercode import UserLoaded as UserLoaded
    from .models.usercode import load_user_model as load_user_model
    from .ntk.analysis import NTKAnalysis as NTKAnalysis
    from .ntk.analysis import run_ntk as run_ntk
    from .ntk.config import NTKConfig as NTKConfig
    from .ntk.eigen import topk_eigh as topk_eigh
    from .ntk.factors import Factor as Factor
    from .ntk.factors import layer_factors as layer_factors
    from .ntk.kernel import GroupNTK as GroupNTK
    from .ntk.kernel import NTKReport as NTKReport
    from .ntk.kernel import ntk_report as ntk_report
    from .ntk.target import TargetNTK as TargetNTK
    from .ntk.target import target_ntk as target_ntk
    from .sae.config import SAEConfig as SAEConfig
    from .sae.model import SparseAutoencoder as SparseAutoencoder
    from .sae.model import TrainedSAE as TrainedSAE
    from .sae.model import train_sae as train_sae
    from .sae.run import SAERun as SAERun
    from .sae.run import run_sae as run_sae
    from .sae.saelens import LoadedSAE as LoadedSAE
    from .sae.saelens import load_sae as load_sae
    from .sae.saelens import save_sae as save_sae
    from .sample_data import sample_data_dir as sample_data_dir
    from .sample_data import write_examples as write_examples
    from .signals import load_signal as load_signal
    from .signals.mesh import extract_surface as extract_surface
    from .spectra import RankReport as RankReport
    from .spectra import rank_report as rank_report
    from .spectra import spectrum_stats as spectrum_stats
    from .spectra import weight_stable_rank as weight_stable_rank
    from .study.api import compare_folder as compare_folder
    from .study.api import freeze_folder as freeze_folder
    from .study.api import load_study as load_study
    from .study.compare_study import CompareStudy as CompareStudy
    from .study.freeze_study import FreezeStudy as FreezeStudy
    from .study.rundir import RunDir as RunDir
    from .study.runner import run_study as run_study
    from .study.single import CompareResult as CompareResult
    from .study.single import compare as compare
    from .study.stats import paired as paired
    from .study.stats import summarize as summarize
    from .tables import rank_rows as rank_rows
    from .tables import to_dataframe as to_dataframe
    from .tables import write_csv as write_csv
    from .threads import choose_threads as choose_threads


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'inrdiag' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
