"""Sparse autoencoders on one layer's activations over the coordinate grid (cohort paper, DESIGN.md section 6).

A layer's activations Z (N x d, one row per grid point) are decomposed as ``Z ~ F W_dec + b_dec`` with
sparse codes ``F = act((Z - b_dec) W_enc + b_enc)`` (N x m); the m rows of ``W_dec`` are the atoms.
``act`` is TopK (keep the k largest pre-activations, then ReLU) or ReLU with an L1 penalty; the
tensor names, shapes and the ``b_dec`` subtraction follow SAELens (``W_enc`` d x m, ``W_dec`` m x d).

This module: the configuration, the autoencoder, its training and the codes of every grid point.
``sae_analysis``: splicing into the network, metrics, atom statistics and batched ablations;
``sae_io``: SAELens-layout files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InrdiagError

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
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0
    #: TopK: weight of the auxiliary loss that makes dead atoms predict the residual (0 disables).
    aux_coef: float = 1.0 / 32
    #: Steps without firing after which an atom counts as dead for the auxiliary loss.
    dead_after: int = 100

    def validate(self) -> None:
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


# ---------------------------------------------------------------- training
Progress = Callable[[int, int, float], None]


def _train_bytes(n: int, d: int, cfg: SAEConfig) -> int:
    """SAE parameters with their gradients and Adam moments, and a batch's dense pre-activations."""
    m = cfg.atoms
    return 4 * (4 * (2 * m * d + m + d) + 4 * min(cfg.batch_size, n) * m)


def _memory_check(n: int, d: int, cfg: SAEConfig) -> None:
    from ..grid import check_memory

    nbytes = _train_bytes(n, d, cfg) + 4 * (2 * n * d + 2 * encode_chunk_size(cfg.atoms) * cfg.atoms)
    check_memory(nbytes, f"an SAE with {cfg.atoms} atoms on {d} features", "--atoms or --batch-size")


def estimate_bytes(n: int, d: int, d_next: int, dim: int, channels: int, cfg: SAEConfig, itemsize: int = 4) -> float:
    """Peak memory of ``analyse``: activations and their copies, SAE training, the sparse codes (TopK: N k
    non-zeros; ReLU: estimated N m / 8) with the ablation's copies, and the chunked ablation passes."""
    m = cfg.atoms
    nnz = n * (cfg.k if cfg.kind == "topk" else max(1, m // 8))
    grid = itemsize * n * (3 * d + 2 * d_next + 3 * channels + dim) + 4 * n * d
    train = _train_bytes(n, d, cfg)
    codes = 2 * 20 * nnz + 2 * 4 * encode_chunk_size(m) * m
    ablation = itemsize * 4 * ABLATION_CHUNK * max(d_next, d)
    return float(grid + train + codes + ablation)


def check_analysis_memory(n: int, d: int, d_next: int, dim: int, channels: int, cfg: SAEConfig, device,
                          itemsize: int = 4) -> None:  # fmt: skip
    """Refuse (one line, with the estimate) an analysis that would not fit: half the RAM, or 90% of the GPU's."""
    from ..grid import check_memory

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

    if not isinstance(cfg, SAEConfig):
        raise SAEError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
    cfg.validate()
    if not isinstance(X, torch.Tensor) or X.dim() != 2 or not (X.is_floating_point() or X.is_complex()):
        what = f"a {X.dim()}-D {X.dtype} tensor" if isinstance(X, torch.Tensor) else type(X).__name__
        raise SAEError(f"X must be the layer's activations as a 2-D float tensor (N x d), got {what}")
    n, d = X.shape
    if n < 1 or d < 1:
        raise SAEError(f"X must hold at least one point and one unit, got shape {list(X.shape)}")
    _memory_check(n, d, cfg)
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
            last_fired[ind[vals > 0]] = step  # for the auxiliary loss's dead-atom test
        else:
            f = torch.relu(h)
            recon = f @ sae.W_dec + sae.b_dec
        err = xb - recon
        loss = (err * err).sum(1).mean() / var
        if cfg.kind == "relu" and cfg.l1 > 0:
            loss = loss + cfg.l1 * (f * sae.W_dec.norm(dim=1)).sum(1).mean() / scale
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
