"""``inrdiag ntk`` as one call: the NTK report of a model and, with a target file, its alignment and the
plain-GD residual curve (``run_ntk``). The command parses its flags into an ``NTKConfig``, calls
``run_ntk`` and renders the result; a notebook does the same::

    from inrdiag.ntk.analysis import run_ntk
    from inrdiag.ntk.kernel import NTKConfig

    res = run_ntk(model, NTKConfig(dtype="auto"), target="camera.png")
    res.report.eigenvalues[:5], res.target.alignment
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InrdiagError
from ..fitting.targets import fit_to_model, load_target
from ..models.adapter import as_adapter
from .kernel import NTKConfig, NTKReport, make_config, ntk_report
from .points import grid_points
from .target import TargetNTK, target_ntk


@dataclass
class NTKAnalysis:
    """What ``inrdiag ntk`` prints: the report, and the target part when a target was given."""

    report: NTKReport
    target: TargetNTK | None = None
    #: The target file as given.
    target_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The command's JSON: the report's keys and ``target`` (null without one)."""
        data = self.report.to_dict()
        data["target"] = None if self.target is None else {"path": self.target_path, **self.target.to_dict()}
        return data


def run_ntk(
    model: Any,
    config: NTKConfig | None = None,
    *,
    target: str | Path | None = None,
    lr: float | None = None,
    fit_steps: int = 0,
) -> NTKAnalysis:
    """The NTK of ``model`` (anything ``inrdiag.models.adapter.as_adapter`` takes) under ``config``; with
    ``target`` (an image or occupancy grid, resampled onto the NTK grid) also the kernel-target alignment
    and the residual curve linearised plain GD predicts with step ``lr`` (default N C / lambda_1), and with
    ``fit_steps`` > 0 the measured curve of that GD from the model."""
    cfg = make_config(config)
    if target is None and (fit_steps or lr is not None):
        given = "--fit-steps" if fit_steps else "--lr"
        raise InrdiagError(f"{given} applies to the plain-GD fit of a target; give --target IMAGE too")
    names = list(cfg.layer_names) if cfg.layer_names is not None else None
    ad = as_adapter(model, in_features=cfg.in_features, names=names)
    if target is None:
        return NTKAnalysis(report=ntk_report(ad, cfg))
    tgt = load_target(target, size=grid_points(ad.in_features, cfg.grid))
    channel_note = fit_to_model(tgt, ad.in_features, ad.out_features)
    rep = ntk_report(ad, dataclasses.replace(cfg, vectors=True))
    y = tgt.values if rep.indices is None else tgt.values[rep.indices]
    res = target_ntk(rep, ad, y, lr=lr, steps=fit_steps, fit=fit_steps > 0)
    res.notes.extend(tgt.notes)
    if channel_note:
        res.notes.append(channel_note)
    if tgt.kind == "occupancy":
        res.notes.append("occupancy target: PSNR here is of the MSE on 0/1 values (fit and compare report IoU)")
    return NTKAnalysis(report=rep, target=res, target_path=str(target))
