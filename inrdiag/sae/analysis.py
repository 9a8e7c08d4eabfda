"""What an SAE says about the network: splicing, metrics, atom statistics, single-atom ablations.

Single-atom ablations are batched: removing atom j changes layer K's output by the rank-1 term
``F[:, j] W_dec[j]``, which is non-zero only on the points where j fires. So only those points are
re-run, from the next layer's pre-activation ``P - F[n, j] (W_dec[j] W_{K+1}^T)``, and the metric
is updated from per-point statistics: all m ablations cost N * L0 point evaluations of the layers
after K (L0 = mean active atoms per point), instead of m full passes over the grid. Every partial
forward pass is the adapter's (``ModuleAdapter.features``, ``splice``, ``splice_pre``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..device import resolve_device
from ..metrics import psnr_from_mse
from ..models.adapter import ModuleAdapter, as_adapter
from ..progress import Progress
from ..signals.kinds import KINDS as TARGET_KINDS
from .config import JSON_HARMFUL_ROWS
from .model import (
    ABLATION_CHUNK,
    Codes,
    SAEConfig,
    SAEError,
    SparseAutoencoder,
    check_analysis_memory,
    describe_sae,
    encode_all,
    train_sae,
)
from .saelens import LoadedSAE

#: The SAE's settings that a file not written by inrdiag does not state (null in the JSON report).
UNSTATED_SETTINGS = ("l1", "lr", "batch_size", "seed", "aux_coef", "dead_after")


# ---------------------------------------------------------------- model side: activations and splicing
def check_layer(model: Any, layer: int) -> None:
    """Refuse (SAEError) a layer without a representation; ``model``: anything ``as_adapter`` takes."""
    ad = as_adapter(model)
    hidden = ad.hidden
    if not hidden:
        raise SAEError("this model has no hidden layer (one linear layer): nothing to decompose")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise SAEError(f"--layer must be an integer, got {layer!r}")
    plain = hidden == list(range(len(hidden))) and ad.head == len(hidden)
    if plain and not 0 <= layer < len(hidden):
        raise SAEError(f"--layer {layer} is out of range: this model's hidden layers are 0..{len(hidden) - 1} "
                       f"(as numbered by `inrdiag rank`; the output head {len(hidden)} has no activations)")  # fmt: skip
    if not 0 <= layer < len(ad.layers):
        raise SAEError(f"--layer {layer} is out of range: this model's layers with a representation are "
                       f"{', '.join(map(str, hidden))} (as numbered by `inrdiag rank`)")  # fmt: skip
    if ad.representations[layer] is None:
        raise SAEError(f"--layer {layer} ({ad.layers[layer].name}) has no representation: {ad.reasons[layer]}; "
                       f"layers with one: {', '.join(map(str, hidden))}")  # fmt: skip


def layer_activations(model: Any, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Z_layer (N x width): the input of the linear layer after ``layer`` on the points ``x`` (N x d; for a
    CoordMLP: hidden layer ``layer``'s post-activation output). ``ModuleAdapter.features``."""
    return as_adapter(model).features(x, layer)


def splice_forward(model: Any, layer: int, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """The network's output (N x C) with layer ``layer``'s representation replaced by ``z`` (N x width); a chain
    (CoordMLP, nn.Sequential) runs the layers after it only, any other module a full forward on the points
    ``x`` (``ModuleAdapter.splice``)."""
    ad = as_adapter(model)
    rep = ad.representation(layer)
    return ad.splice(x, layer, z.to(ad.linear(rep.reader).weight.dtype))


# ---------------------------------------------------------------- metrics on the target
class Scorer:
    """A metric that is a function of per-point statistics summed over the grid, so an ablation that
    changes a few points is scored exactly from the change of those points' statistics.

    image: statistic = squared error of the clipped output summed over channels; PSNR on [0, 1].
    occupancy: statistics = (intersection, union) indicators of ``logit > 0`` and the truth; IoU.
    """

    def __init__(self, kind: str, y: torch.Tensor) -> None:
        if kind not in TARGET_KINDS:
            raise SAEError(f"unknown target kind {kind!r}; allowed: {', '.join(TARGET_KINDS)}")
        # audio/video are scored like images (audio clips to [-1, 1]); sdf like occupancy with inside = f < 0
        self.kind = "image" if kind in ("image", "audio", "video") else "occupancy"
        self.lo = -1.0 if kind == "audio" else 0.0
        self.sign = -1.0 if kind == "sdf" else 1.0
        self.y = y if kind != "sdf" else (y < 0).to(y.dtype)
        self.name = "PSNR" if self.kind == "image" else "IoU"
        self.unit = "dB" if self.kind == "image" else ""

    def point_stats(self, out: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Per-point statistics (B x S, float64) of the outputs ``out`` of the points ``rows`` (default: all)."""
        y = self.y if rows is None else self.y[rows]
        if self.kind == "image":
            d = out.detach().to(torch.float64).clamp(self.lo, 1) - y.to(torch.float64)
            return (d * d).sum(1, keepdim=True)
        pred = self.sign * out.detach() > 0
        truth = y > 0.5
        return torch.stack([(pred & truth).any(1), (pred | truth).any(1)], 1).to(torch.float64)

    def metric(self, totals: torch.Tensor) -> float | list[float]:
        """Metric from summed statistics: a float for one total (S,), a list for a batch (B x S)."""
        t = torch.as_tensor(totals, dtype=torch.float64).cpu()
        rows = t.reshape(-1, t.shape[-1]).tolist()
        if self.kind == "image":
            n = self.y.numel()
            vals = [psnr_from_mse(r[0] / n) for r in rows]
        else:
            vals = [1.0 if r[1] <= 0 else r[0] / r[1] for r in rows]
        return vals[0] if t.dim() == 1 else vals

    def value(self, totals: torch.Tensor) -> float:
        """The metric of one total (S,)."""
        v = self.metric(totals)
        return v if isinstance(v, float) else v[0]

    def values(self, totals: torch.Tensor) -> list[float]:
        """The metrics of a batch of totals (B x S)."""
        v = self.metric(totals)
        return v if isinstance(v, list) else [v]


# ---------------------------------------------------------------- per-atom statistics
@dataclass
class AtomStats:
    #: m: fraction of points where the atom fires
    coverage: torch.Tensor
    #: m: sum of its activation (times ||W_dec row||, 1 after training)
    mass: torch.Tensor
    #: m: activation-weighted RMS distance from its centroid / the grid's RMS radius (nan if dead)
    spread: torch.Tensor
    #: m x D
    centroid: torch.Tensor


def atom_stats(codes: Codes, sae: SparseAutoencoder, coords: torch.Tensor) -> AtomStats:
    """Coverage, activation mass, spatial spread and centroid of every atom over the grid ``coords`` (N x D)."""
    m = sae.d_sae
    n = coords.shape[0]
    c = coords.to(device=codes.values.device, dtype=torch.float64)
    norms = sae.W_dec.detach().norm(dim=1).to(device=c.device, dtype=torch.float64)
    count = torch.zeros(m, dtype=torch.float64, device=c.device)
    mass = torch.zeros(m, dtype=torch.float64, device=c.device)
    first = torch.zeros(m, c.shape[1], dtype=torch.float64, device=c.device)
    second = torch.zeros(m, dtype=torch.float64, device=c.device)
    step = 1 << 20  # bounded float64 temporaries on large grids
    for s in range(0, codes.values.numel(), step):
        a = codes.atoms[s : s + step].to(c.device)
        w = codes.values[s : s + step].to(device=c.device, dtype=torch.float64) * norms[a]
        pos = c[codes.rows[s : s + step].to(c.device)]
        count.index_add_(0, a, torch.ones_like(w))
        mass.index_add_(0, a, w)
        first.index_add_(0, a, w[:, None] * pos)
        second.index_add_(0, a, w * (pos * pos).sum(1))
    safe = mass.clamp_min(1e-300)
    centroid = first / safe[:, None]
    var = (second / safe - (centroid * centroid).sum(1)).clamp_min(0)
    domain = float(((c - c.mean(0)) ** 2).sum(1).mean())
    spread = torch.sqrt(var / domain) if domain > 0 else torch.zeros_like(var)
    spread = torch.where(mass > 0, spread, torch.full_like(spread, math.nan))
    return AtomStats(coverage=count / n, mass=mass, spread=spread, centroid=centroid)


# ---------------------------------------------------------------- ablations
@dataclass
class Ablations:
    """What ``ablate_atoms`` returns; ``Scorer.values(totals)`` / ``Scorer.value(base)`` give the metrics."""

    #: The atoms removed, one at a time, in this order.
    atoms: list[int]
    #: len(atoms) x S, float64: the summed per-point statistics with each atom removed.
    totals: torch.Tensor
    #: S, float64: the summed statistics of the spliced network with no atom removed.
    base: torch.Tensor


def _by_output(ad: ModuleAdapter, reader: int) -> bool:
    """Whether ablations can start from the reading linear layer's output: it is a plain ``nn.Linear`` with real
    weights, called once per point, so removing ``v W_dec[j]`` from its input removes ``v (W_dec[j] W^T)``."""
    layer = ad.layers[reader]
    lin = layer.module
    return (layer.calls == 1 and layer.per_point and type(lin).forward is nn.Linear.forward
            and not lin.weight.is_complex())  # fmt: skip


def ablate_atoms(model: Any, layer: int, sae: SparseAutoencoder, codes: Codes, scorer: Scorer,
                 atoms: Sequence[int] | None = None, chunk: int = ABLATION_CHUNK,
                 x: torch.Tensor | None = None) -> Ablations:  # fmt: skip
    """The spliced network's statistics with each atom in ``atoms`` (default: all) removed, one at a time.

    Exact: the points where an atom does not fire are unchanged. ``x``: the points (N x d), needed unless the
    model is a chain (CoordMLP, nn.Sequential). When the reading linear layer is a plain ``nn.Linear`` called
    once per point the points re-run from its output ``P - F[n, j] (W_dec[j] W^T)``
    (``ModuleAdapter.splice_pre``); otherwise from its input ``Z - F[n, j] W_dec[j]`` (``splice``).
    """
    ad = as_adapter(model)
    rep = ad.representation(layer)
    lin = ad.linear(rep.reader)
    wdt = lin.weight.dtype
    dev = lin.weight.device
    m = sae.d_sae
    by_output = _by_output(ad, rep.reader)
    if x is not None:
        x = x.to(dev)

    def rows_of(r: torch.Tensor) -> torch.Tensor | None:
        return None if x is None else x[r]

    with torch.no_grad():
        Z = codes.recon.to(device=dev, dtype=wdt)
        Wd = sae.W_dec.detach().to(device=dev, dtype=wdt)  # m x width
        if by_output:
            P = lin(Z)  # the reader's output, spliced
            U = Wd @ lin.weight.T  # m x d_next
            out = ad.splice_pre(x, rep.reader, P)
        else:
            P, U = Z, Wd
            out = ad.splice(x, layer, Z)
        base = scorer.point_stats(out)
        total = base.sum(0)
        sel = torch.ones(m, dtype=torch.bool, device=codes.atoms.device)
        if atoms is not None:
            sel = torch.zeros(m, dtype=torch.bool, device=codes.atoms.device)
            sel[torch.as_tensor(list(atoms), dtype=torch.long, device=sel.device)] = True
        keep = sel[codes.atoms]
        rows, at, vals = codes.rows[keep], codes.atoms[keep], codes.values[keep]
        delta = torch.zeros(m, base.shape[1], dtype=torch.float64, device=dev)
        for s in range(0, rows.shape[0], chunk):
            r, a, v = rows[s : s + chunk].to(dev), at[s : s + chunk].to(dev), vals[s : s + chunk].to(dev, wdt)
            pre = P[r] - v[:, None] * U[a]
            o = ad.splice_pre(rows_of(r), rep.reader, pre) if by_output else ad.splice(rows_of(r), layer, pre)
            delta.index_add_(0, a, scorer.point_stats(o, r) - base[r])
    chosen = list(range(m)) if atoms is None else [int(j) for j in atoms]
    idx = torch.as_tensor(chosen, dtype=torch.long, device=dev)
    return Ablations(atoms=chosen, totals=total[None, :] + delta[idx], base=total)


# ---------------------------------------------------------------- the whole analysis
@dataclass
class SAEReport:
    model: str
    layer: int
    layer_name: str
    width: int
    target: dict[str, Any]
    config: SAEConfig
    device: str
    points: int
    grid: list[int]
    fvu: float
    mse: float
    l0: float
    dead_fraction: float
    metric_name: str
    metric_model: float
    metric_spliced: float
    coverage: list[float]
    spread: list[float]
    mass: list[float]
    #: atom index -> metric drop when removed (only the atoms ablated)
    ablation: dict[int, float]
    ablated: int
    losses: list[float]
    seconds: dict[str, float]
    #: SAELens's name of the SAE's architecture: "topk", "standard" or "jumprelu" (``SparseAutoencoder.architecture``).
    architecture: str
    notes: list[str] = field(default_factory=list)
    #: A loaded SAE file's own description (``sae_file_info``); None for an SAE trained here or given as a module.
    source: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        live = [i for i, c in enumerate(self.coverage) if c > 0]
        cov = sorted(self.coverage[i] for i in live)
        spr = sorted(self.spread[i] for i in live)

        def q(v: list[float], p: float) -> float | None:
            return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] if v else None

        return {
            "live_atoms": len(live),
            "coverage": {"median": statistics.median(cov) if cov else None, "p10": q(cov, 0.1), "p90": q(cov, 0.9)},
            "spread": {"median": statistics.median(spr) if spr else None, "p10": q(spr, 0.1), "p90": q(spr, 0.9)},
            "local_fraction": (sum(1 for c in cov if c < 0.05) / len(cov)) if cov else None,
        }

    def harmful(self, n: int = 10) -> list[dict[str, Any]]:
        order = sorted(self.ablation.items(), key=lambda kv: (-kv[1], -self.mass[kv[0]], kv[0]))[:n]
        return [{"atom": j, "drop": d, "coverage": self.coverage[j], "spread": self.spread[j], "mass": self.mass[j]}
                for j, d in order]  # fmt: skip

    def sae_dict(self) -> dict[str, Any]:
        """The JSON ``sae`` section: the configuration, ``kind`` ("jumprelu" for a JumpReLU SAE) and SAELens's
        ``architecture``; a loaded file adds its own description (``file``) and nulls the settings it does
        not state."""
        out: dict[str, Any] = {**asdict(self.config), "architecture": self.architecture}
        if self.architecture == "jumprelu":
            out["kind"] = "jumprelu"
        if self.source is not None:
            if (self.source.get("training") or {}).get("by") != "inrdiag":
                out.update(dict.fromkeys(UNSTATED_SETTINGS))
            out["file"] = self.source
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "layer": self.layer, "layer_name": self.layer_name, "width": self.width,
            "target": self.target, "sae": self.sae_dict(),
            "device": self.device, "grid": {"shape": self.grid, "points": self.points},
            "metrics": {"fvu": self.fvu, "explained_variance": 1.0 - self.fvu, "mse": self.mse, "l0": self.l0,
                        "dead_fraction": self.dead_fraction, "metric": self.metric_name,
                        "model": self.metric_model, "spliced": self.metric_spliced},
            "atoms_summary": self.summary(),
            "ablation": {"ablated": self.ablated, "metric": self.metric_name,
                         "most_harmful": self.harmful(JSON_HARMFUL_ROWS)},
            "atoms": [{"atom": j, "coverage": self.coverage[j], "spread": self.spread[j],
                       "mass": self.mass[j], "drop": self.ablation.get(j)} for j in range(len(self.coverage))],
            "final_loss": self.losses[-1] if self.losses else None,
            "seconds": self.seconds, "notes": self.notes,
        }  # fmt: skip


@dataclass
class SAEAnalysis:
    """What ``analyse`` returns: the report, the SAE it analysed (trained or given) and its codes on the grid."""

    report: SAEReport
    sae: SparseAutoencoder
    codes: Codes

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict()


def analyse(model: Any, layer: int, coords: torch.Tensor, y: torch.Tensor, kind: str, cfg: SAEConfig | None = None,
            *, device: str | torch.device = "auto", ablate: int | None = None, progress: Progress | None = None,
            grid: Sequence[int] | None = None, model_name: str = "", layer_name: str = "",
            target_info: dict[str, Any] | None = None,
            sae: SparseAutoencoder | LoadedSAE | None = None) -> SAEAnalysis:  # fmt: skip
    """Collect activations, train the SAE, score it spliced in, compute atom statistics and ablations.

    ``coords``: the grid points (N x d); ``y``: the target's values on them (N x C); ``kind``: the target kind
    (image, occupancy, audio, video, sdf). ``cfg``: how to train (default ``SAEConfig()``; its seed is
    range-checked). ``ablate``: None = every live atom, 0 = none, n = the n atoms of largest activation mass.
    ``sae``: an SAE to analyse instead of training one: a ``SparseAutoencoder`` or what ``load_sae`` returns
    (its settings and file description go into the report; ``cfg`` then only describes it, default: what the
    SAE states). ``model``: anything ``inrdiag.models.adapter.as_adapter`` takes (a CoordMLP, any nn.Module,
    a Loaded, an adapter). ``progress(step, total, loss, metric)`` during training (``metric`` NaN).
    """
    ad = as_adapter(model)
    check_layer(ad, layer)
    rep = ad.representation(layer)
    source: dict[str, Any] | None = None
    module: SparseAutoencoder | None
    if isinstance(sae, LoadedSAE):
        module, source = sae.sae, sae.info
        cfg = cfg if cfg is not None else sae.config
    elif sae is None or isinstance(sae, SparseAutoencoder):
        module = sae
    else:
        raise SAEError(f"sae must be a SparseAutoencoder or what load_sae returns, got {type(sae).__name__}")
    if module is None:
        cfg = SAEConfig() if cfg is None else cfg
        if not isinstance(cfg, SAEConfig):
            raise SAEError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
        cfg.validate()
    elif cfg is None:  # a given SAE keeps the settings it was trained with (steps 0 when unknown)
        cfg = describe_sae(module)
    elif not isinstance(cfg, SAEConfig):
        raise SAEError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
    if ablate is not None and (isinstance(ablate, bool) or not isinstance(ablate, int) or ablate < 0):
        raise SAEError(f"--ablate must be an integer >= 0, got {ablate!r}")
    if not isinstance(coords, torch.Tensor) or coords.dim() != 2 or not isinstance(y, torch.Tensor):
        raise SAEError("coords must be the grid points (N x d tensor) and y the target's values on them (N x C)")
    if y.shape[0] != coords.shape[0]:
        raise SAEError(f"coords has {coords.shape[0]} points but y {y.shape[0]} rows")
    scorer = Scorer(kind, y)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    wdt = ad.dtype
    check_analysis_memory(coords.shape[0], rep.width, ad.layers[rep.reader].out_features, coords.shape[1],
                          ad.out_features, cfg, dev, torch.finfo(wdt).bits // 8)  # fmt: skip
    ad.module.to(dev).eval()
    net = ad.module
    x = coords.to(device=dev, dtype=wdt)
    scorer.y = scorer.y.to(dev)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        Z = ad.features(x, layer)
        out_model = net(x)
    metric_model = scorer.value(scorer.point_stats(out_model).sum(0))
    t["activations"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses: list[float] = []
    if module is None:
        trained = train_sae(Z, cfg, dev, progress)
        module, losses = trained.sae, trained.losses
    else:
        if module.d_in != Z.shape[1]:
            raise SAEError(f"the SAE reads {module.d_in} features but layer {layer} has {Z.shape[1]} units")
        module = module.to(dev).eval()
    t["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    codes = encode_all(module, Z)
    Zf = Z.to(codes.recon.dtype)
    err = float(((Zf - codes.recon) ** 2).sum())
    var = float(((Zf - Zf.mean(0)) ** 2).sum())
    n = Z.shape[0]
    with torch.no_grad():
        out_sp = splice_forward(ad, layer, codes.recon, x)
    metric_spliced = scorer.value(scorer.point_stats(out_sp).sum(0))
    st = atom_stats(codes, module, x)
    t["metrics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    live = (st.mass > 0).nonzero().squeeze(1)
    chosen: list[int]
    if ablate == 0:
        chosen = []
    elif ablate is None or ablate >= live.numel():
        chosen = live.tolist()
    else:
        chosen = torch.argsort(st.mass, descending=True)[:ablate].tolist()
    drops: dict[int, float] = {}
    if chosen:
        ab = ablate_atoms(ad, layer, module, codes, scorer, chosen, x=x)
        base = scorer.value(ab.base)
        vals = scorer.values(ab.totals)
        drops = {j: (0.0 if v == base else base - v) for j, v in zip(chosen, vals)}  # inf - inf: no change
    t["ablation"] = time.perf_counter() - t0
    notes = []
    if module.kind == "topk" and module.k >= Z.shape[1]:
        notes.append(f"k = {module.k} >= the layer's {Z.shape[1]} units: the codes are no sparser than the activations")
    if kind == "occupancy":
        notes.append("occupancy target: the metric is IoU of logit > 0; drops are in IoU")
    if not ad.is_coord_mlp:
        notes.append(f"layer {layer} of {ad.kind}: the SAE reads the input of {ad.layers[rep.reader].name} "
                     f"({rep.width} features){'; ' + rep.note if rep.note else ''}")  # fmt: skip
    report = SAEReport(
        model=model_name, layer=layer, layer_name=layer_name or ad.layers[layer].name, width=Z.shape[1],
        target=target_info or {}, config=cfg, device=str(dev), points=n, grid=list(grid or []),
        fvu=err / var if var > 0 else math.nan, mse=err / (n * Z.shape[1]), l0=codes.values.numel() / n,
        dead_fraction=float((st.mass <= 0).sum()) / module.d_sae, metric_name=scorer.name,
        metric_model=metric_model, metric_spliced=metric_spliced, coverage=st.coverage.tolist(),
        spread=st.spread.tolist(), mass=st.mass.tolist(), ablation=drops, ablated=len(chosen), losses=losses,
        seconds=t, architecture=module.architecture, notes=notes, source=source,
    )  # fmt: skip
    return SAEAnalysis(report=report, sae=module, codes=codes)
