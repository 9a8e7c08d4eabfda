"""What an SAE says about the network: splicing, metrics, atom statistics, single-atom ablations.

Single-atom ablations are batched: removing atom j changes layer K's output by the rank-1 term
``F[:, j] W_dec[j]``, which is non-zero only on the points where j fires. So only those points are
re-run, from the next layer's pre-activation ``P - F[n, j] (W_dec[j] W_{K+1}^T)``, and the metric
is updated from per-point statistics: all m ablations cost N * L0 point evaluations of the layers
after K (L0 = mean active atoms per point), instead of m full passes over the grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..metrics import psnr_from_mse
from .model import (
    ABLATION_CHUNK,
    SAELENS_ARCH,
    Codes,
    Progress,
    SAEConfig,
    SAEError,
    check_analysis_memory,
    encode_all,
    train_sae,
)


# ---------------------------------------------------------------- model side: activations and splicing
def _adapter(model):
    from ..models.adapter import as_adapter

    return as_adapter(model)


def check_layer(model, layer: int) -> None:
    """Refuse (SAEError) a layer without a representation; ``model``: anything ``as_adapter`` takes."""
    ad = _adapter(model)
    hidden = ad.hidden
    if not hidden:
        raise SAEError("this model has no hidden layer (one linear layer): nothing to decompose")
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


def layer_activations(model, x, layer: int):
    """Z_layer (N x width): the input of the linear layer after ``layer`` on the points ``x`` (for a
    CoordMLP: hidden layer ``layer``'s post-activation output)."""
    return _adapter(model).features(x, layer)


def splice_forward(model, layer: int, z, x=None):
    """The network's output with layer ``layer``'s representation replaced by ``z``; a chain (CoordMLP,
    nn.Sequential) runs the layers after it only, any other module a full forward on the points ``x``."""
    ad = _adapter(model)
    rep = ad.representation(layer)
    return ad.splice(x, layer, z.to(ad.linear(rep.reader).weight.dtype))


# ---------------------------------------------------------------- metrics on the target
class Scorer:
    """A metric that is a function of per-point statistics summed over the grid, so an ablation that
    changes a few points is scored exactly from the change of those points' statistics.

    image: statistic = squared error of the clipped output summed over channels; PSNR on [0, 1].
    occupancy: statistics = (intersection, union) indicators of ``logit > 0`` and the truth; IoU.
    """

    def __init__(self, kind: str, y):
        # audio/video are scored like images (audio clips to [-1, 1]); sdf like occupancy with inside = f < 0
        self.kind = "image" if kind in ("image", "audio", "video") else "occupancy"
        self.lo = -1.0 if kind == "audio" else 0.0
        self.sign = -1.0 if kind == "sdf" else 1.0
        self.y = y if kind != "sdf" else (y < 0).to(y.dtype)
        self.name = "PSNR" if self.kind == "image" else "IoU"
        self.unit = "dB" if self.kind == "image" else ""

    def point_stats(self, out, rows=None):
        import torch

        y = self.y if rows is None else self.y[rows]
        if self.kind == "image":
            d = out.detach().to(torch.float64).clamp(self.lo, 1) - y.to(torch.float64)
            return (d * d).sum(1, keepdim=True)
        pred = self.sign * out.detach() > 0
        truth = y > 0.5
        return torch.stack([(pred & truth).any(1), (pred | truth).any(1)], 1).to(torch.float64)

    def metric(self, totals):
        """Metric from summed statistics: a float for one total (S,), a list for a batch (B x S)."""
        import torch

        t = torch.as_tensor(totals, dtype=torch.float64).cpu()
        rows = t.reshape(-1, t.shape[-1]).tolist()
        if self.kind == "image":
            n = self.y.numel()
            vals = [psnr_from_mse(r[0] / n) for r in rows]
        else:
            vals = [1.0 if r[1] <= 0 else r[0] / r[1] for r in rows]
        return vals[0] if t.dim() == 1 else vals


# ---------------------------------------------------------------- per-atom statistics
@dataclass
class AtomStats:
    coverage: Any  # m: fraction of points where the atom fires
    mass: Any  # m: sum of its activation (times ||W_dec row||, 1 after training)
    spread: Any  # m: activation-weighted RMS distance from its centroid / the grid's RMS radius (nan if dead)
    centroid: Any  # m x D


def atom_stats(codes: Codes, sae, coords) -> AtomStats:
    import torch

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
    return AtomStats(count / n, mass, spread, centroid)


# ---------------------------------------------------------------- ablations
def ablate_atoms(model, layer: int, sae, codes: Codes, scorer: Scorer, atoms=None, chunk: int = ABLATION_CHUNK,
                 x=None):  # fmt: skip
    """Metric of the spliced network with each atom in ``atoms`` (default: all) removed, one at a time.

    Returns a float64 tensor of summed per-point statistics per atom (len(atoms) x S), from which
    ``scorer.metric`` gives the metric. Exact: the points where an atom does not fire are unchanged.
    ``x``: the points (N x d), needed unless the model is a chain (CoordMLP, nn.Sequential). When the
    reading linear layer is called once per point the points re-run from its output
    ``P - F[n, j] (W_dec[j] W^T)``; otherwise from its input ``Z - F[n, j] W_dec[j]``.
    """
    import torch

    ad = _adapter(model)
    rep = ad.representation(layer)
    reader = ad.layers[rep.reader]
    lin = reader.module
    wdt = lin.weight.dtype
    dev = lin.weight.device
    m = sae.d_sae
    by_output = reader.calls == 1 and reader.per_point
    if x is not None:
        x = x.to(dev)

    def rows_of(r):
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
            sel[torch.as_tensor(atoms, device=sel.device)] = True
        keep = sel[codes.atoms]
        rows, at, vals = codes.rows[keep], codes.atoms[keep], codes.values[keep]
        delta = torch.zeros(m, base.shape[1], dtype=torch.float64, device=dev)
        for s in range(0, rows.shape[0], chunk):
            r, a, v = rows[s : s + chunk].to(dev), at[s : s + chunk].to(dev), vals[s : s + chunk].to(dev, wdt)
            pre = P[r] - v[:, None] * U[a]
            o = ad.splice_pre(rows_of(r), rep.reader, pre) if by_output else ad.splice(rows_of(r), layer, pre)
            delta.index_add_(0, a, scorer.point_stats(o, r) - base[r])
    idx = torch.arange(m) if atoms is None else torch.as_tensor(atoms)
    return total[None, :] + delta[idx.to(dev)], total


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
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        import statistics

        live = [i for i, c in enumerate(self.coverage) if c > 0]
        cov = sorted(self.coverage[i] for i in live)
        spr = sorted(self.spread[i] for i in live)

        def q(v, p):
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "layer": self.layer, "layer_name": self.layer_name, "width": self.width,
            "target": self.target, "sae": {**asdict(self.config), "architecture": SAELENS_ARCH[self.config.kind]},
            "device": self.device, "grid": {"shape": self.grid, "points": self.points},
            "metrics": {"fvu": self.fvu, "explained_variance": 1.0 - self.fvu, "mse": self.mse, "l0": self.l0,
                        "dead_fraction": self.dead_fraction, "metric": self.metric_name,
                        "model": self.metric_model, "spliced": self.metric_spliced},
            "atoms_summary": self.summary(),
            "ablation": {"ablated": self.ablated, "metric": self.metric_name,
                         "most_harmful": self.harmful(20)},
            "atoms": [{"atom": j, "coverage": self.coverage[j], "spread": self.spread[j],
                       "mass": self.mass[j], "drop": self.ablation.get(j)} for j in range(len(self.coverage))],
            "final_loss": self.losses[-1] if self.losses else None,
            "seconds": self.seconds, "notes": self.notes,
        }  # fmt: skip


def analyse(model, layer: int, coords, y, kind: str, cfg: SAEConfig, device="auto", ablate: int | None = None,
            progress: Progress | None = None, grid=None, model_name: str = "", layer_name: str = "",
            target_info: dict | None = None, sae=None):  # fmt: skip
    """Collect activations, train the SAE, score it spliced in, compute atom statistics and ablations.

    ``ablate``: None = every live atom, 0 = none, n = the n atoms of largest activation mass.
    ``sae``: a trained SAE (``load_sae``) to analyse instead of training one. ``model``: anything
    ``inrdiag.models.adapter.as_adapter`` takes (a CoordMLP, any nn.Module, a Loaded, an adapter).
    Returns (report, sae, codes).
    """
    import torch

    from ..device import resolve_device

    ad = _adapter(model)
    check_layer(ad, layer)
    rep = ad.representation(layer)
    if sae is None:  # a loaded SAE keeps the settings it was trained with (steps 0 when unknown)
        cfg.validate()
    if ablate is not None and ablate < 0:
        raise SAEError(f"--ablate must be >= 0, got {ablate}")
    dev = resolve_device(device)
    wdt = ad.dtype
    check_analysis_memory(coords.shape[0], rep.width, ad.layers[rep.reader].out_features, coords.shape[1],
                          ad.out_features, cfg, dev, torch.finfo(wdt).bits // 8)  # fmt: skip
    ad.module.to(dev).eval()
    model = ad.module
    x = coords.to(device=dev, dtype=wdt)
    y = y.to(dev)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        Z = ad.features(x, layer)
        out_model = model(x)
    scorer = Scorer(kind, y)
    metric_model = scorer.metric(scorer.point_stats(out_model).sum(0))
    t["activations"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if sae is None:
        sae, losses = train_sae(Z, cfg, dev, progress)
    else:
        if sae.d_in != Z.shape[1]:
            raise SAEError(f"the SAE reads {sae.d_in} features but layer {layer} has {Z.shape[1]} units")
        sae, losses = sae.to(dev).eval(), []
    t["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    codes = encode_all(sae, Z)
    Zf = Z.to(codes.recon.dtype)
    err = float(((Zf - codes.recon) ** 2).sum())
    var = float(((Zf - Zf.mean(0)) ** 2).sum())
    n = Z.shape[0]
    with torch.no_grad():
        out_sp = splice_forward(ad, layer, codes.recon, x)
    metric_spliced = scorer.metric(scorer.point_stats(out_sp).sum(0))
    st = atom_stats(codes, sae, x)
    t["metrics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    live = (st.mass > 0).nonzero().squeeze(1)
    if ablate == 0:
        chosen = []
    elif ablate is None or ablate >= live.numel():
        chosen = live.tolist()
    else:
        chosen = torch.argsort(st.mass, descending=True)[:ablate].tolist()
    drops: dict[int, float] = {}
    if chosen:
        totals, base_total = ablate_atoms(ad, layer, sae, codes, scorer, chosen, x=x)
        base = scorer.metric(base_total)
        vals = scorer.metric(totals)
        drops = {j: (0.0 if v == base else base - v) for j, v in zip(chosen, vals)}  # inf - inf: no change
    t["ablation"] = time.perf_counter() - t0
    notes = []
    if sae.kind == "topk" and sae.k >= Z.shape[1]:
        notes.append(f"k = {sae.k} >= the layer's {Z.shape[1]} units: the codes are no sparser than the activations")
    if kind == "occupancy":
        notes.append("occupancy target: the metric is IoU of logit > 0; drops are in IoU")
    if not ad.is_coord_mlp:
        notes.append(f"layer {layer} of {ad.kind}: the SAE reads the input of {ad.layers[rep.reader].name} "
                     f"({rep.width} features){'; ' + rep.note if rep.note else ''}")  # fmt: skip
    rep = SAEReport(
        model=model_name, layer=layer, layer_name=layer_name, width=Z.shape[1], target=target_info or {},
        config=cfg, device=str(dev), points=n, grid=list(grid or []), fvu=err / var if var > 0 else math.nan,
        mse=err / (n * Z.shape[1]), l0=codes.values.numel() / n,
        dead_fraction=float((st.mass <= 0).sum()) / cfg.atoms, metric_name=scorer.name,
        metric_model=metric_model, metric_spliced=metric_spliced, coverage=st.coverage.tolist(),
        spread=st.spread.tolist(), mass=st.mass.tolist(), ablation=drops, ablated=len(chosen), losses=losses,
        seconds=t, notes=notes,
    )  # fmt: skip
    return rep, sae, codes
