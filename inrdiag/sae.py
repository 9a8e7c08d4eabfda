"""Sparse autoencoders on one layer's activations over the coordinate grid (cohort paper, DESIGN.md section 6).

A layer's activations Z (N x d, one row per grid point) are decomposed as ``Z ~ F W_dec + b_dec`` with
sparse codes ``F = act((Z - b_dec) W_enc + b_enc)`` (N x m); the m rows of ``W_dec`` are the atoms.
``act`` is TopK (keep the k largest pre-activations, then ReLU) or ReLU with an L1 penalty; the
tensor names, shapes and the ``b_dec`` subtraction follow SAELens (``W_enc`` d x m, ``W_dec`` m x d).

Single-atom ablations are batched: removing atom j changes layer K's output by the rank-1 term
``F[:, j] W_dec[j]``, which is non-zero only on the points where j fires. So only those points are
re-run, from the next layer's pre-activation ``P - F[n, j] (W_dec[j] W_{K+1}^T)``, and the metric
is updated from per-point statistics: all m ablations cost N * L0 point evaluations of the layers
after K (L0 = mean active atoms per point), instead of m full passes over the grid.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InrdiagError

KINDS = ("topk", "relu")
#: SAELens's ``architecture`` names for our two kinds.
SAELENS_ARCH = {"topk": "topk", "relu": "standard"}
WEIGHTS_FILE = "sae_weights.safetensors"
CFG_FILE = "cfg.json"


class SAEError(InrdiagError):
    """A sparse-autoencoder request that cannot be carried out."""


@dataclass
class SAEConfig:
    """How the SAE is built and trained (every field is written to cfg.json)."""

    atoms: int = 4096
    kind: str = "topk"
    k: int = 32
    l1: float = 0.1
    steps: int = 1000
    batch_size: int = 2048
    lr: float = 1e-3
    seed: int = 0
    #: TopK: weight of the auxiliary loss that makes dead atoms predict the residual (0 disables).
    aux_coef: float = 1.0 / 32
    #: Steps without firing after which an atom counts as dead for the auxiliary loss.
    dead_after: int = 100

    def validate(self, d_in: int | None = None) -> None:
        if self.kind not in KINDS:
            raise SAEError(f"unknown --kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        if self.atoms < 1:
            raise SAEError(f"--atoms must be >= 1, got {self.atoms}")
        if self.kind == "topk" and not 1 <= self.k <= self.atoms:
            raise SAEError(f"--k must be 1..--atoms ({self.atoms}), got {self.k}")
        if self.steps < 1:
            raise SAEError(f"--steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise SAEError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SAEError(f"--lr must be a positive number, got {self.lr}")
        if not (self.l1 >= 0 and math.isfinite(self.l1)):
            raise SAEError(f"--l1 must be >= 0, got {self.l1}")


# ---------------------------------------------------------------- the autoencoder
def _sae_module():
    import torch
    from torch import nn

    class SparseAutoencoder(nn.Module):
        """``forward(x) == decode(encode(x))``; parameters named as SAELens names them."""

        def __init__(self, d_in: int, d_sae: int, kind: str = "topk", k: int = 32, dtype=torch.float32):
            super().__init__()
            self.d_in, self.d_sae, self.kind, self.k = d_in, d_sae, kind, k
            self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae, dtype=dtype))
            self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
            self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in, dtype=dtype))
            self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))

        def pre(self, x):
            return (x - self.b_dec) @ self.W_enc + self.b_enc

        def encode_sparse(self, x):
            """(values, atom indices), each B x k' (k' = k for TopK, m for ReLU); values >= 0."""
            h = self.pre(x)
            if self.kind == "topk":
                vals, idx = torch.topk(h, self.k, dim=-1)
                return torch.relu(vals), idx
            vals = torch.relu(h)
            return vals, None

        def encode(self, x):
            vals, idx = self.encode_sparse(x)
            if idx is None:
                return vals
            return torch.zeros(x.shape[0], self.d_sae, dtype=vals.dtype, device=vals.device).scatter_(1, idx, vals)

        def decode(self, f):
            return f @ self.W_dec + self.b_dec

        def decode_sparse(self, vals, idx):
            if idx is None:
                return self.decode(vals)
            return _bag(idx, vals, self.W_dec) + self.b_dec

        def forward(self, x):
            return self.decode(self.encode(x))

    return SparseAutoencoder


def _bag(idx, vals, W):
    """``sum_j vals[:, j] W[idx[:, j]]`` (B x d) without a dense B x m code matrix (embedding_bag:
    10x faster than gather + einsum on CPU, forward and backward)."""
    import torch

    return torch.nn.functional.embedding_bag(idx, W, per_sample_weights=vals.to(W.dtype), mode="sum")


def make_sae(d_in: int, d_sae: int, kind: str = "topk", k: int = 32, dtype=None):
    import torch

    return _sae_module()(d_in, d_sae, kind, k, dtype or torch.float32)


# ---------------------------------------------------------------- model side: activations and splicing
def check_layer(model, layer: int) -> None:
    hidden = len(model.linears) - 1
    if hidden < 1:
        raise SAEError("this model has no hidden layer (one linear layer): nothing to decompose")
    if not 0 <= layer < hidden:
        raise SAEError(f"--layer {layer} is out of range: this model's hidden layers are 0..{hidden - 1} "
                       f"(as numbered by `inrdiag rank`; the output head {hidden} has no activations)")  # fmt: skip


def layer_activations(model, x, layer: int):
    """Z_layer: hidden layer ``layer``'s post-activation output on the points ``x`` (N x width)."""
    from .cohort import encoder_features

    return encoder_features(model, layer + 1, x)


def splice_forward(model, layer: int, z):
    """The network's output with layer ``layer``'s activations replaced by ``z`` (layers after it only)."""
    from .cohort import head_forward

    return head_forward(model, layer + 1, z.to(model.linears[layer + 1].weight.dtype))


# ---------------------------------------------------------------- metrics on the target
class Scorer:
    """A metric that is a function of per-point statistics summed over the grid, so an ablation that
    changes a few points is scored exactly from the change of those points' statistics.

    image: statistic = squared error of the clipped output summed over channels; PSNR on [0, 1].
    occupancy: statistics = (intersection, union) indicators of ``logit > 0`` and the truth; IoU.
    """

    def __init__(self, kind: str, y):
        self.kind = kind
        self.y = y
        self.name = "PSNR" if kind == "image" else "IoU"
        self.unit = "dB" if kind == "image" else ""

    def point_stats(self, out, rows=None):
        import torch

        y = self.y if rows is None else self.y[rows]
        if self.kind == "image":
            d = out.detach().to(torch.float64).clamp(0, 1) - y.to(torch.float64)
            return (d * d).sum(1, keepdim=True)
        pred = out.detach() > 0
        truth = y > 0.5
        return torch.stack([(pred & truth).any(1), (pred | truth).any(1)], 1).to(torch.float64)

    def metric(self, totals):
        """Metric from summed statistics: a float for one total (S,), a list for a batch (B x S)."""
        import torch

        t = torch.as_tensor(totals, dtype=torch.float64).cpu()
        rows = t.reshape(-1, t.shape[-1]).tolist()
        if self.kind == "image":
            n = self.y.numel()
            vals = [math.inf if r[0] <= 0 else -10.0 * math.log10(r[0] / n) for r in rows]
        else:
            vals = [1.0 if r[1] <= 0 else r[0] / r[1] for r in rows]
        return vals[0] if t.dim() == 1 else vals


# ---------------------------------------------------------------- training
Progress = Callable[[int, int, float], None]


def _memory_check(n: int, d: int, cfg: SAEConfig, chunk: int) -> None:
    from .grid import check_memory

    m = cfg.atoms
    params = 2 * m * d + m + d
    nbytes = 4 * (4 * params + 4 * min(cfg.batch_size, n) * m + 2 * n * d + 2 * chunk * m)
    check_memory(nbytes, f"an SAE with {m} atoms on {d} features", "--atoms or --batch-size")


def estimate_bytes(n: int, d: int, d_next: int, dim: int, channels: int, cfg: SAEConfig, itemsize: int = 4) -> float:
    """Peak memory of ``analyse``: activations and their copies, SAE training, the sparse codes (TopK: N k
    non-zeros; ReLU: estimated N m / 8) with the ablation's copies, and the chunked ablation passes."""
    m = cfg.atoms
    nnz = n * (cfg.k if cfg.kind == "topk" else max(1, m // 8))
    grid = itemsize * n * (3 * d + 2 * d_next + 3 * channels + dim) + 4 * n * d
    train = 4 * (4 * (2 * m * d + m + d) + 4 * min(cfg.batch_size, n) * m)
    codes = 2 * 20 * nnz + 2 * 4 * encode_chunk_size(m) * m
    ablation = itemsize * 4 * ABLATION_CHUNK * max(d_next, d)
    return float(grid + train + codes + ablation)


def check_analysis_memory(n: int, d: int, d_next: int, dim: int, channels: int, cfg: SAEConfig, device,
                          itemsize: int = 4) -> None:  # fmt: skip
    """Refuse (one line, with the estimate) an analysis that would not fit: half the RAM, or 90% of the GPU's."""
    from .grid import check_memory

    limit = None
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        limit = 0.9 * torch.cuda.get_device_properties(device).total_memory
    nbytes = estimate_bytes(n, d, d_next, dim, channels, cfg, itemsize)
    check_memory(nbytes, f"an SAE analysis with {cfg.atoms} atoms on {n:,} points x {d} features",
                 "--atoms, --k, --batch-size or --grid", limit)  # fmt: skip


ABLATION_CHUNK = 32768


def encode_chunk_size(m: int) -> int:
    return max(256, min(16384, (64 * 2**20) // (4 * max(m, 1))))


def train_sae(X, cfg: SAEConfig, device=None, progress: Progress | None = None):
    """Train an SAE on the rows of ``X`` (N x d; float32 copy on ``device``). Returns (sae, losses)."""
    import torch

    cfg.validate()
    n, d = X.shape
    _memory_check(n, d, cfg, encode_chunk_size(cfg.atoms))
    dev = X.device if device is None else device
    X = X.detach().to(device=dev, dtype=torch.float32)
    if not bool(torch.isfinite(X).all()):
        raise SAEError("the layer's activations are not finite (NaN/Inf weights or inputs); nothing to train on")
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    sae = make_sae(d, cfg.atoms, cfg.kind, cfg.k).to(dev)
    mean = X.mean(0)
    var = float(((X - mean) ** 2).sum(1).mean())
    if var <= 0:
        raise SAEError("the layer's activations are constant over the grid: nothing for an SAE to explain")
    scale = math.sqrt(var)
    with torch.no_grad():
        w = torch.randn(cfg.atoms, d, generator=gen, dtype=torch.float32).to(dev)
        w /= w.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(w)
        if cfg.kind == "topk":
            # Encoder = decoder^T, scaled so a typical centred point gives pre-activations of order 1.
            sae.W_enc.copy_(w.T / scale)
        else:
            # ReLU: E[sum_j relu(d_j . x) d_j] = m x / (2 d) for isotropic unit d_j, so W_enc = (2d/m) W_dec^T
            # reconstructs x at init instead of overshooting m/(2d)-fold.
            sae.W_enc.copy_(w.T * (2.0 * d / cfg.atoms))
        sae.b_dec.copy_(mean)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    last_fired = torch.zeros(cfg.atoms, dtype=torch.long, device=dev)
    losses: list[float] = []
    bsz = min(cfg.batch_size, n)
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, n, (bsz,), generator=gen).to(dev)
        xb = X[idx]
        h = sae.pre(xb)
        if cfg.kind == "topk":
            vals, ind = torch.topk(h, cfg.k, dim=-1)
            vals = torch.relu(vals)
            recon = _bag(ind, vals, sae.W_dec) + sae.b_dec
            fired = ind[vals > 0]
        else:
            f = torch.relu(h)
            recon = f @ sae.W_dec + sae.b_dec
            fired = (f > 0).any(0).nonzero().squeeze(1)
        err = xb - recon
        loss = (err * err).sum(1).mean() / var
        if cfg.kind == "relu" and cfg.l1 > 0:
            loss = loss + cfg.l1 * (f * sae.W_dec.norm(dim=1)).sum(1).mean() / scale
        last_fired[fired] = step
        if cfg.kind == "topk" and cfg.aux_coef > 0 and step > cfg.dead_after:
            dead = (step - last_fired) > cfg.dead_after
            nd = int(dead.sum())
            if nd:
                k_aux = min(max(d // 2, 1), nd)
                hd = h.masked_fill(~dead, float("-inf"))
                av, ai = torch.topk(hd, k_aux, dim=-1)
                aux = _bag(ai, torch.relu(av), sae.W_dec)
                resid = err.detach()
                aux_loss = ((aux - resid) ** 2).sum(1).mean() / var
                loss = loss + cfg.aux_coef * min(nd / max(d // 2, 1), 1.0) * aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise SAEError(f"SAE training diverged at step {step}; lower --lr")
        losses.append(lv)
        if progress:
            progress(step, cfg.steps, lv)
    sae.eval()
    return sae, losses


# ---------------------------------------------------------------- codes over the whole grid
@dataclass
class Codes:
    """The non-zero codes of every grid point: ``rows[i]``, ``atoms[i]``, ``values[i]`` (values > 0)."""

    rows: Any
    atoms: Any
    values: Any
    recon: Any  # N x d reconstruction


def encode_all(sae, X) -> Codes:
    import torch

    X = X.to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
    chunk = encode_chunk_size(sae.d_sae)
    rows, atoms, values, recon = [], [], [], []
    with torch.no_grad():
        for s in range(0, X.shape[0], chunk):
            xb = X[s : s + chunk]
            vals, idx = sae.encode_sparse(xb)
            recon.append(sae.decode_sparse(vals, idx))
            if idx is None:
                r, a = (vals > 0).nonzero(as_tuple=True)
                v = vals[r, a]
            else:
                keep = vals > 0
                r = torch.arange(xb.shape[0], device=xb.device)[:, None].expand_as(idx)[keep]
                a, v = idx[keep], vals[keep]
            rows.append(r + s)
            atoms.append(a)
            values.append(v)
    return Codes(torch.cat(rows), torch.cat(atoms), torch.cat(values), torch.cat(recon))


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
def ablate_atoms(model, layer: int, sae, codes: Codes, scorer: Scorer, atoms=None, chunk: int = ABLATION_CHUNK):
    """Metric of the spliced network with each atom in ``atoms`` (default: all) removed, one at a time.

    Returns a float64 tensor of summed per-point statistics per atom (len(atoms) x S), from which
    ``scorer.metric`` gives the metric. Exact: the points where an atom does not fire are unchanged.
    """
    import torch

    lin = model.linears[layer + 1]
    wdt = lin.weight.dtype
    dev = lin.weight.device
    m = sae.d_sae
    last = len(model.linears) - 1
    with torch.no_grad():
        P = lin(codes.recon.to(device=dev, dtype=wdt))  # next layer's pre-activation, spliced
        U = sae.W_dec.detach().to(device=dev, dtype=wdt) @ lin.weight.T  # m x d_next
        out = _from_pre(model, layer + 1, P, last)
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
            o = _from_pre(model, layer + 1, pre, last)
            delta.index_add_(0, a, scorer.point_stats(o, r) - base[r])
    idx = torch.arange(m) if atoms is None else torch.as_tensor(atoms)
    return total[None, :] + delta[idx.to(dev)], total


def _from_pre(model, k: int, pre, last: int):
    """Finish the forward pass from linear layer k's output ``pre``."""
    from .cohort import head_forward

    if k == last:
        return pre
    return head_forward(model, k + 1, model.hidden_step(k, pre))


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
            "atoms": [{"atom": j, "coverage": self.coverage[j], "spread": _nan_none(self.spread[j]),
                       "mass": self.mass[j], "drop": self.ablation.get(j)} for j in range(len(self.coverage))],
            "final_loss": self.losses[-1] if self.losses else None,
            "seconds": self.seconds, "notes": self.notes,
        }  # fmt: skip


def _nan_none(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def analyse(model, layer: int, coords, y, kind: str, cfg: SAEConfig, device="auto", ablate: int | None = None,
            progress: Progress | None = None, grid=None, model_name: str = "", layer_name: str = "",
            target_info: dict | None = None, sae=None):  # fmt: skip
    """Collect activations, train the SAE, score it spliced in, compute atom statistics and ablations.

    ``ablate``: None = every live atom, 0 = none, n = the n atoms of largest activation mass.
    ``sae``: a trained SAE (``load_sae``) to analyse instead of training one.
    Returns (report, sae, codes).
    """
    import torch

    from .device import resolve_device

    check_layer(model, layer)
    cfg.validate()
    if ablate is not None and ablate < 0:
        raise SAEError(f"--ablate must be >= 0, got {ablate}")
    dev = resolve_device(device)
    wdt = model.linears[0].weight.dtype
    check_analysis_memory(coords.shape[0], model.linears[layer].out_features, model.linears[layer + 1].out_features,
                          coords.shape[1], model.linears[-1].out_features, cfg, dev,
                          torch.finfo(wdt).bits // 8)  # fmt: skip
    model = model.to(dev).eval()
    x = coords.to(device=dev, dtype=wdt)
    y = y.to(dev)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        Z = layer_activations(model, x, layer)
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
        out_sp = splice_forward(model, layer, codes.recon)
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
        totals, base_total = ablate_atoms(model, layer, sae, codes, scorer, chosen)
        base = scorer.metric(base_total)
        vals = scorer.metric(totals)
        drops = {j: (0.0 if v == base else base - v) for j, v in zip(chosen, vals)}  # inf - inf: no change
    t["ablation"] = time.perf_counter() - t0
    notes = []
    if sae.kind == "topk" and sae.k >= Z.shape[1]:
        notes.append(f"k = {sae.k} >= the layer's {Z.shape[1]} units: the codes are no sparser than the activations")
    if kind == "occupancy":
        notes.append("occupancy target: the metric is IoU of logit > 0; drops are in IoU")
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


# ---------------------------------------------------------------- SAELens-layout files
def saelens_cfg(sae, cfg: SAEConfig, meta: dict | None = None) -> dict[str, Any]:
    out = {
        "architecture": SAELENS_ARCH[sae.kind], "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none", "metadata": dict(meta or {}),
    }  # fmt: skip
    if sae.kind == "topk":
        out["k"] = sae.k
    out["metadata"]["inrdiag"] = asdict(cfg)
    return out


def check_sae_out(folder, force: bool = False) -> list[Path]:
    """Refuse (before any work) an -o folder whose SAE files exist (without ``force``), a file in its place,
    or a missing parent folder. Returns the two file paths."""
    from .io import check_writable

    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise SAEError(f"-o {d}: exists and is not a folder")
    paths = [d / WEIGHTS_FILE, d / CFG_FILE]
    if d.is_dir():
        for p in paths:
            check_writable(str(p), force)
    else:
        check_writable(str(d), force)
    return paths


def save_sae(sae, cfg: SAEConfig, folder, meta: dict | None = None, force: bool = False) -> list[str]:
    """Write ``folder/sae_weights.safetensors`` and ``folder/cfg.json`` (SAELens's layout), each atomically."""
    from safetensors.torch import save_file

    from .io import atomic_write

    paths = check_sae_out(folder, force)
    Path(folder).mkdir(exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sae.state_dict().items()}
    atomic_write(paths[0], lambda tmp: save_file(tensors, tmp), force)
    text = json.dumps(saelens_cfg(sae, cfg, meta), indent=2) + "\n"
    atomic_write(paths[1], lambda tmp: Path(tmp).write_text(text), force)
    return [str(p) for p in paths]


def loaded_config(sae, cfg: dict) -> SAEConfig:
    """The SAEConfig describing a loaded SAE (its training settings when inrdiag wrote it; steps 0 otherwise)."""
    from dataclasses import fields

    meta = ((cfg.get("metadata") or {}) if isinstance(cfg.get("metadata"), dict) else {}).get("inrdiag") or {}
    known = {f.name for f in fields(SAEConfig)}
    base = {k: v for k, v in meta.items() if k in known} if isinstance(meta, dict) else {}
    if not base:
        base = {"steps": 0}
    base.update(atoms=sae.d_sae, kind=sae.kind)
    if sae.kind == "topk":
        base["k"] = sae.k
    try:
        return SAEConfig(**base)
    except TypeError:  # pragma: no cover - filtered above
        return SAEConfig(atoms=sae.d_sae, kind=sae.kind, k=sae.k or 1, steps=0)


def load_sae(folder):
    """Read an SAE saved by ``save_sae`` or by SAELens (architectures ``topk`` and ``standard``; SAELens
    before 6.0 wrote TopK SAEs as ``standard`` with ``activation_fn_str: "topk"``). Returns (sae, cfg dict)."""
    import torch
    from safetensors.torch import load_file

    d = Path(folder)
    if not d.is_dir():
        raise SAEError(f"--sae {d}: not a folder (expected {WEIGHTS_FILE} + {CFG_FILE})")
    try:
        cfg = json.loads((d / CFG_FILE).read_text())
        state = load_file(str(d / WEIGHTS_FILE))
    except FileNotFoundError as exc:
        raise SAEError(f"{d}: no {Path(exc.filename).name}") from None
    except (ValueError, OSError, RuntimeError) as exc:
        raise SAEError(
            f"{d}: unreadable SAE ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if not isinstance(cfg, dict):
        raise SAEError(f"{d / CFG_FILE}: expected a JSON object")
    arch = cfg.get("architecture", "standard")
    act = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if arch == "standard" and act == "topk":  # SAELens < 6.0
        arch, cfg = "topk", {**cfg, "k": kwargs.get("k", cfg.get("k"))}
    kind = {v: k for k, v in SAELENS_ARCH.items()}.get(arch)
    if kind is None:
        raise SAEError(f"{d}: SAE architecture {arch!r} is not supported (topk, standard)")
    if arch == "standard" and act not in (None, "relu"):
        raise SAEError(f"{d}: activation {act!r} is not supported (relu, topk)")
    for key, ok in (("normalize_activations", (None, "none")), ("reshape_activations", (None, "none")),
                    ("rescale_acts_by_decoder_norm", (None, False))):  # fmt: skip
        if cfg.get(key) not in ok:
            raise SAEError(f"{d}: {key} = {cfg.get(key)!r} is not supported")
    missing = {"W_enc", "W_dec", "b_enc", "b_dec"} - set(state)
    if missing:
        raise SAEError(f"{d}: missing tensors {sorted(missing)}")
    W_enc, W_dec, b_enc, b_dec = (state[k] for k in ("W_enc", "W_dec", "b_enc", "b_dec"))
    if W_enc.dim() != 2 or not W_enc.is_floating_point():
        raise SAEError(f"{d}: W_enc must be a 2-D float matrix (d_in x d_sae), got shape {list(W_enc.shape)}")
    d_in, d_sae = W_enc.shape
    want = {"W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    for key, shp in want.items():
        if tuple(state[key].shape) != shp:
            raise SAEError(f"{d}: {key} has shape {list(state[key].shape)}, expected {list(shp)} (W_enc is "
                           f"{d_in} x {d_sae})")  # fmt: skip
    k = 0
    if kind == "topk":
        try:
            k = int(cfg.get("k"))
        except (TypeError, ValueError):
            raise SAEError(f"{d}: a topk SAE needs an integer k in {CFG_FILE}") from None
        if not 1 <= k <= d_sae:
            raise SAEError(f"{d}: k = {k} is outside 1..d_sae ({d_sae})")
    if not all(bool(torch.isfinite(t).all()) for t in (W_enc, W_dec, b_enc, b_dec)):
        raise SAEError(f"{d}: the SAE's weights hold NaN or Inf")
    sae = make_sae(d_in, d_sae, kind, k, dtype=W_enc.dtype)
    sae.load_state_dict({"W_enc": W_enc, "b_enc": b_enc.to(W_enc.dtype), "W_dec": W_dec.to(W_enc.dtype),
                         "b_dec": b_dec.to(W_enc.dtype)})  # fmt: skip
    if not cfg.get("apply_b_dec_to_input", True):
        with torch.no_grad():  # SAELens without the subtraction: fold -b_dec W_enc into b_enc
            sae.b_enc += sae.b_dec @ sae.W_enc
    return sae.eval(), cfg
