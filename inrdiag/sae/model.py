"""Sparse autoencoders on one layer's activations over the coordinate grid (cohort paper, DESIGN.md section 6).

A layer's activations Z (N x d, one row per grid point) are decomposed as ``Z ~ F W_dec + b_dec`` with
sparse codes ``F = act((Z - b_dec) W_enc + b_enc)`` (N x m); the m rows of ``W_dec`` are the atoms.
``act`` is TopK (keep the k largest pre-activations, then ReLU) or ReLU with an L1 penalty; the
tensor names, shapes and the ``b_dec`` subtraction follow SAELens (``W_enc`` d x m, ``W_dec`` m x d).

This module: the autoencoder (``SparseAutoencoder``, and ``JumpReLUSAE`` for SAELens's JumpReLU files),
its training and the codes of every grid point. ``config``: the configuration and names (no torch);
``analysis``: splicing into the network, metrics, atom statistics and batched ablations; ``saelens``:
SAELens-layout files; ``run``: the whole ``inrdiag sae`` computation on a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..progress import Progress
from .config import ARCHITECTURES, CFG_FILE, KINDS, SAELENS_ARCH, WEIGHTS_FILE, SAEConfig, SAEError  # noqa: F401  (re-exported)

#: Points per chunk of the batched ablations' partial forward passes.
ABLATION_CHUNK = 32768


# ---------------------------------------------------------------- the autoencoders
class SparseAutoencoder(nn.Module):
    """``forward(x) == decode(encode(x))``; parameters named, shaped and registered as SAELens names them.

    ``kind``: "topk" (codes = ReLU of the k largest pre-activations) or "relu" (dense ReLU codes,
    SAELens's "standard"). ``rescaled``: the file was SAELens's ``rescale_acts_by_decoder_norm``
    (folded into the weights on loading); ``converted_from``: the tensor a loaded threshold came from.
    """

    def __init__(self, d_in: int, d_sae: int, kind: str = "topk", k: int = 32,
                 dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        super().__init__()
        if kind not in KINDS:
            raise SAEError(f"unknown SAE kind {kind!r}; allowed: {', '.join(KINDS)}")
        self.d_in, self.d_sae, self.kind, self.k = d_in, d_sae, kind, k
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.rescaled = False
        self.converted_from: str | None = None

    @property
    def architecture(self) -> str:
        """SAELens's name of this SAE's architecture ("topk", "standard" or, for ``JumpReLUSAE``, "jumprelu")."""
        return SAELENS_ARCH[self.kind]

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(values, atom indices), each B x k' (k' = k for TopK; dense B x m values and no indices
        otherwise); values >= 0."""
        h = self.pre(x)
        if self.kind == "topk":
            vals, idx = torch.topk(h, self.k, dim=-1)
            return torch.relu(vals), idx
        return torch.relu(h), None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        vals, idx = self.encode_sparse(x)
        if idx is None:
            return vals
        return torch.zeros(x.shape[0], self.d_sae, dtype=vals.dtype, device=vals.device).scatter_(1, idx, vals)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def decode_sparse(self, vals: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        if idx is None:
            return self.decode(vals)
        return _bag(idx, vals, self.W_dec) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class JumpReLUSAE(SparseAutoencoder):
    """SAELens's JumpReLU: the same parameters plus a per-atom ``threshold`` (registered after them);
    codes ``relu(h) * (h > threshold)`` = ``h * (h > max(threshold, 0))``, dense like the ReLU kind."""

    def __init__(self, d_in: int, d_sae: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(d_in, d_sae, "relu", 0, dtype)
        self.threshold = nn.Parameter(torch.zeros(d_sae, dtype=dtype), requires_grad=False)

    @property
    def architecture(self) -> str:
        return "jumprelu"

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.pre(x)
        return h * (h > self.threshold.clamp_min(0)).to(h.dtype), None


def _bag(idx: torch.Tensor, vals: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``sum_j vals[:, j] W[idx[:, j]]`` (B x d) without a dense B x m code matrix (embedding_bag:
    10x faster than gather + einsum on CPU, forward and backward)."""
    return torch.nn.functional.embedding_bag(idx, W, per_sample_weights=vals.to(W.dtype), mode="sum")


def make_sae(d_in: int, d_sae: int, kind: str = "topk", k: int = 32,
             dtype: torch.dtype | None = None) -> SparseAutoencoder:  # fmt: skip
    """An untrained ``SparseAutoencoder`` (all parameters zero; ``dtype`` default float32)."""
    return SparseAutoencoder(d_in, d_sae, kind, k, dtype or torch.float32)


def describe_sae(sae: SparseAutoencoder) -> SAEConfig:
    """The SAEConfig an SAE of unknown training states: its size, kind and k (``steps`` 0: not trained here)."""
    return SAEConfig(atoms=sae.d_sae, kind=sae.kind, k=sae.k or 1, steps=0)


# ---------------------------------------------------------------- memory
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


def check_analysis_memory(n: int, d: int, d_next: int, dim: int, channels: int, cfg: SAEConfig,
                          device: torch.device | str, itemsize: int = 4) -> None:  # fmt: skip
    """Refuse (one line, with the estimate) an analysis that would not fit: half the RAM, or 90% of the GPU's."""
    from ..grid import check_memory

    limit = None
    dev = torch.device(device)
    if dev.type == "cuda":
        limit = 0.9 * torch.cuda.get_device_properties(dev).total_memory
    nbytes = estimate_bytes(n, d, d_next, dim, channels, cfg, itemsize)
    check_memory(nbytes, f"an SAE analysis with {cfg.atoms} atoms on {n:,} points x {d} features",
                 "--atoms, --k, --batch-size or --grid", limit)  # fmt: skip


def encode_chunk_size(m: int) -> int:
    """Points per chunk of ``encode_all`` (a chunk's dense B x m pre-activations stay near 64 MiB)."""
    return max(256, min(16384, (64 * 2**20) // (4 * max(m, 1))))


# ---------------------------------------------------------------- training
@dataclass
class TrainedSAE:
    """What ``train_sae`` returns: the trained SAE (eval mode) and the loss after every step."""

    sae: SparseAutoencoder
    #: Minibatch loss per step (squared error / the activations' total variance, plus the penalties).
    losses: list[float]


def train_sae(X: torch.Tensor, cfg: SAEConfig, device: torch.device | str | None = None,
              progress: Progress | None = None) -> TrainedSAE:  # fmt: skip
    """Train an SAE on the rows of ``X`` (N x d; float32 copy on ``device``, default X's).

    ``progress(step, total, loss, metric)`` after every step (``metric`` NaN: an SAE has none)."""
    if not isinstance(cfg, SAEConfig):
        raise SAEError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
    cfg.validate()
    if progress is not None and not callable(progress):
        raise SAEError(f"progress must be a callable (step, total, loss, metric) or None, got {progress!r}")
    if not isinstance(X, torch.Tensor) or X.dim() != 2 or not (X.is_floating_point() or X.is_complex()):
        what = f"a {X.dim()}-D {X.dtype} tensor" if isinstance(X, torch.Tensor) else type(X).__name__
        raise SAEError(f"X must be the layer's activations as a 2-D float tensor (N x d), got {what}")
    n, d = X.shape
    if n < 1 or d < 1:
        raise SAEError(f"X must hold at least one point and one unit, got shape {list(X.shape)}")
    _memory_check(n, d, cfg)
    dev = X.device if device is None else torch.device(device)
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
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise SAEError(f"SAE training diverged at step {step}; lower --lr")
        losses.append(lv)
        if progress is not None:
            progress(step, cfg.steps, lv, math.nan)
    sae.eval()
    return TrainedSAE(sae=sae, losses=losses)


# ---------------------------------------------------------------- codes over the whole grid
@dataclass
class Codes:
    """The non-zero codes of every grid point: ``rows[i]``, ``atoms[i]``, ``values[i]`` (values > 0)."""

    rows: torch.Tensor
    atoms: torch.Tensor
    values: torch.Tensor
    #: N x d reconstruction.
    recon: torch.Tensor


def encode_all(sae: SparseAutoencoder, X: torch.Tensor) -> Codes:
    """The sparse codes and the reconstruction of every row of ``X`` (in chunks of ``encode_chunk_size``)."""
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
    return Codes(rows=torch.cat(rows), atoms=torch.cat(atoms), values=torch.cat(values), recon=torch.cat(recon))
