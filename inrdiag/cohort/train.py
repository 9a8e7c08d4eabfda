"""Cohort INRs: one shared encoder fitted jointly on a cohort of signals, one head per signal,
and freeze-depth sweeps that reuse the encoder for new signals (DESIGN.md section 6).

Architecture: a CoordMLP of ``depth`` hidden layers and an output layer (``depth + 1`` linear
layers). The first ``K = shared_layers`` linear layers (and the encoding) form the encoder, shared
by every head; linear layers K..depth form each signal's head (at least its output layer).
Because every signal of a cohort lives on the same coordinate grid, the encoder's features are
computed once per step and fed to every head.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InrdiagError
from ..metrics import to_luma

BACKBONES = ("siren", "ff")
#: Adam learning rates by backbone: STRAINER's 1e-4 for SIREN; 1e-3 for the Fourier-feature ReLU MLP.
DEFAULT_LR = {"siren": 1e-4, "ff": 1e-3}


class CohortError(InrdiagError):
    """A cohort folder, recipe or checkpoint that cannot be used."""


@dataclass
class CohortRecipe:
    """How a cohort model is built and trained (stored in the checkpoint's provenance)."""

    #: siren (sine, w0 = 30, official init) or ff (Gaussian Fourier features + ReLU MLP).
    backbone: str = "siren"
    #: Hidden layers; the network has depth + 1 linear layers.
    depth: int = 4
    width: int = 128
    #: K, the number of linear layers in the shared encoder (1..depth).
    shared_layers: int = 4
    #: Images are resized to size x size.
    size: int = 64
    steps: int = 1000
    #: Adam learning rate (None: by backbone, see DEFAULT_LR).
    lr: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise CohortError(f"unknown --backbone {self.backbone!r}; allowed: {', '.join(BACKBONES)}")
        if self.depth < 1 or self.width < 1:
            raise CohortError(f"--depth and --width must be >= 1, got {self.depth} and {self.width}")
        if not 1 <= self.shared_layers <= self.depth:
            raise CohortError(
                f"--shared-layers {self.shared_layers} does not fit a network of {self.depth} hidden layers: "
                f"choose 1..{self.depth} (the head keeps at least the output layer)"
            )
        if self.size < 2:
            raise CohortError(f"--size must be at least 2, got {self.size}")
        if self.steps < 0:
            raise CohortError(f"--steps must be >= 0, got {self.steps}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.backbone]
        if not self.lr > 0:
            raise CohortError(f"--lr must be positive, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------- data
@dataclass
class CohortData:
    names: list[str]
    #: H x N x C float32 values in [0, 1], on the grid of ``shape``.
    values: Any
    shape: tuple[int, ...]
    skipped: list[str] = field(default_factory=list)
    #: Images whose size differed from ``shape`` (resized) or whose channels were expanded.
    resized: list[str] = field(default_factory=list)


def list_images(folder: str | Path) -> tuple[list[Path], list[str]]:
    """Image files of ``folder`` in sorted order, and the names of other files (skipped, listed)."""
    from ..fitting.targets import IMAGE_SUFFIXES

    p = Path(folder)
    if not p.exists():
        raise CohortError(f"{p}: no such folder")
    if not p.is_dir():
        raise CohortError(f"{p} is not a folder; give a folder of images")
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    other = [f.name for f in files if f.suffix.lower() not in IMAGE_SUFFIXES and f.suffix != ".safetensors"]
    if not images:
        raise CohortError(f"{p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images, other


def load_images(paths: list[Path], size: int, channels: int | None = None) -> CohortData:
    """Load images at size x size; grayscale images become RGB when the cohort mixes both (or when
    ``channels`` = 3), RGB images become gray (ITU-R 601 luma) when ``channels`` = 1.

    Files that cannot be read as images are skipped and listed (never a silent drop).
    """
    import torch

    from ..errors import TargetError
    from ..fitting.targets import load_target

    loaded, names, skipped, resized = [], [], [], []
    for path in paths:
        try:
            t = load_target(path, size=size)
        except TargetError as exc:
            skipped.append(f"{path.name} ({str(exc).split(': ', 1)[-1]})")
            continue
        if t.shape != (size, size):  # pragma: no cover - load_target resamples
            raise CohortError(f"{path}: resampling gave {t.shape}")
        loaded.append(t)
        names.append(path.name)
    if not loaded:
        raise CohortError("no readable images: " + "; ".join(skipped))
    channels = channels or max(t.channels for t in loaded)
    vals = []
    for t in loaded:
        v = t.values
        if v.shape[1] < channels:
            v = v.expand(-1, channels).contiguous()
            resized.append(f"{Path(t.path).name} (gray -> RGB)")
        elif v.shape[1] > channels:
            v = to_luma(v)
            resized.append(f"{Path(t.path).name} (RGB -> gray)")
        vals.append(v)
    return CohortData(names, torch.stack(vals), (size, size), skipped, resized)


# ---------------------------------------------------------------- model
def build_cohort(recipe: CohortRecipe, heads: int, out_features: int, seed: int | None = None) -> list:
    """``heads`` CoordMLPs that share one encoder: the same encoding and linear modules 0..K-1."""
    from ..models.inits import build_model

    seed = recipe.seed if seed is None else seed
    base = build_model(recipe.backbone, 2, out_features, recipe.depth, recipe.width, seed=seed)
    models = [base]
    for d in range(1, heads):
        m = build_model(recipe.backbone, 2, out_features, recipe.depth, recipe.width, seed=seed + 7919 * d)
        share_encoder(base, m, recipe.shared_layers)
        models.append(m)
    return models


def share_encoder(src, dst, K: int) -> None:
    """Make ``dst`` use ``src``'s encoding and linear layers 0..K-1 (the same module objects)."""
    dst.encoding = src.encoding
    for k in range(K):
        dst.linears[k] = src.linears[k]
        if str(k) in src.norms:
            dst.norms[str(k)] = src.norms[str(k)]


def encoder_features(model, K: int, x):
    """Output of the first K linear layers (after their activations): the encoder's features."""
    a = model.encoding(x)
    for k in range(K):
        a = model.hidden_step(k, model.linears[k](a))
    return a


def head_forward(model, K: int, a):
    """Linear layers K..L-1 of ``model`` applied to encoder features ``a``."""
    last = len(model.linears) - 1
    for k in range(K, last + 1):
        a = model.linears[k](a)
        if k < last:
            a = model.hidden_step(k, a)
    return a


def cohort_state(models: list, K: int) -> dict[str, Any]:
    """Tensors of a cohort file: the encoder under CoordMLP names, head d under ``heads.{d}.``."""
    state: dict[str, Any] = {}
    for key, v in models[0].state_dict().items():
        if _is_shared(key, K):
            state[key] = v
    for d, m in enumerate(models):
        for key, v in m.state_dict().items():
            if not _is_shared(key, K):
                state[f"heads.{d}.{key}"] = v
    return state


def _is_shared(key: str, K: int) -> bool:
    parts = key.split(".")
    if parts[0] == "encoding":
        return True
    if parts[0] in ("linears", "norms"):
        return int(parts[1]) < K
    raise CohortError(f"unexpected parameter {key}")  # pragma: no cover


def save_cohort(models: list, recipe: CohortRecipe, names: list[str], path, provenance=None, force=False):
    from ..checkpoints.save import save

    meta = {"cohort": {"shared_layers": recipe.shared_layers, "heads": len(models), "names": names}}
    prov = {"recipe": recipe.to_dict(), **(provenance or {})}
    return save(models[0], path, provenance=prov, force=force, extra_metadata=meta,
                tensors=cohort_state(models, recipe.shared_layers))  # fmt: skip


def load_cohort(path) -> tuple[list, CohortRecipe, list[str]]:
    """All heads of an inrdiag cohort checkpoint, sharing one encoder (eval mode)."""
    import torch

    from ..checkpoints.read import read_checkpoint
    from ..models.mlp import CoordMLP
    from ..models.spec import ArchSpec

    raw = read_checkpoint(path)
    meta = raw.metadata or {}
    if "cohort" not in meta:
        raise CohortError(f"{path} is not an inrdiag cohort checkpoint (made by `inrdiag cohort-train`)")
    spec = ArchSpec.from_dict(meta["arch"])
    K, heads = int(meta["cohort"]["shared_layers"]), int(meta["cohort"]["heads"])
    names = list(meta["cohort"].get("names") or [])
    rec = dict((meta.get("provenance") or {}).get("recipe") or {})
    try:
        recipe = CohortRecipe(**rec)
    except TypeError as exc:
        raise CohortError(f"{path}: unreadable cohort recipe ({exc})") from None
    models = []
    for d in range(heads):
        m = CoordMLP(spec)
        sd = {k: v for k, v in raw.tensors.items() if not k.startswith("heads.")}
        sd.update({k[len(f"heads.{d}.") :]: v for k, v in raw.tensors.items() if k.startswith(f"heads.{d}.")})
        try:
            m.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise CohortError(
                f"{path}: head {d} does not match the stored architecture ({str(exc).splitlines()[0]})"
            ) from None
        if d:
            share_encoder(models[0], m, K)
        models.append(m.to(torch.float32).eval())
    return models, recipe, names


# ---------------------------------------------------------------- training
@dataclass
class CohortTrainResult:
    recipe: CohortRecipe
    names: list[str]
    #: PSNR of each image's head at the end.
    psnr: list[float]
    loss: list[float]
    seconds: float
    skipped: list[str]
    resized: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.to_dict(), "images": self.names, "psnr": self.psnr,
            "psnr_mean": sum(self.psnr) / len(self.psnr), "final_loss": self.loss[-1] if self.loss else None,
            "loss_curve": self.loss, "seconds": self.seconds, "skipped": self.skipped, "resized": self.resized,
        }  # fmt: skip


Progress = Callable[[int, int, float], None]


def training_bytes(heads: int, points: int, channels: int, recipe: CohortRecipe) -> float:
    """Estimated peak memory (bytes) of joint training of ``heads`` heads on ``points`` points each.

    float32 throughout: the targets (H N C); the encoder's activations kept for the backward pass
    (pre- and post-activation of each of its K layers and the encoding, N x width each, x2 for the
    gradients flowing back); each head's activations likewise (depth - K hidden layers + its output);
    parameters with their gradients and Adam's two moments (x4)."""
    from ..models.inits import FF_FEATURES

    w, K, L = recipe.width, recipe.shared_layers, recipe.depth
    enc_feats = FF_FEATURES if recipe.backbone == "ff" else 2
    encoder_acts = points * (enc_feats + 2 * K * w) * 2
    head_acts = heads * points * (2 * (L - K) * w + 2 * channels) * 2
    encoder_params = (enc_feats + 1) * w + (K - 1) * (w + 1) * w
    head_params = heads * ((L - K) * (w + 1) * w + (w + 1) * channels)
    return 4.0 * (
        heads * points * channels + points * 2 + encoder_acts + head_acts + 4 * (encoder_params + head_params)
    )


def check_training_memory(heads: int, points: int, channels: int, recipe: CohortRecipe, device=None) -> None:
    """Refuse (ResourceError, naming --size) a cohort whose training would not fit in memory: half the
    RAM on the CPU, 90% of the GPU's memory on CUDA. Runs before any tensor is allocated."""
    from ..grid import check_memory

    limit = None
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        limit = 0.9 * torch.cuda.get_device_properties(device).total_memory
    side = int(round(points**0.5))
    check_memory(training_bytes(heads, points, channels, recipe),
                 f"cohort training of {heads} image(s) at {side}x{side} through {recipe.depth}x{recipe.width}",
                 "--size (or fewer images per process: more ranks with torchrun, or a smaller --width)",
                 limit)  # fmt: skip


def train_cohort(data: CohortData, recipe: CohortRecipe, device: str = "auto", progress: Progress | None = None):
    """Fit the shared encoder and every head jointly: Adam on the mean over images of each MSE."""
    import torch

    from ..device import resolve_device, tune_malloc
    from ..fitting.targets import psnr

    tune_malloc()
    dev = resolve_device(device)
    H, N, C = data.values.shape
    check_training_memory(H, N, C, recipe, dev)
    models = build_cohort(recipe, H, C)
    for m in models:
        m.to(dev).train()
    params = _unique_params(models)
    opt = torch.optim.Adam(params, lr=recipe.lr)
    x = _coords(data.shape, dev)
    y = data.values.to(dev)
    K = recipe.shared_layers
    losses = []
    t0 = time.perf_counter()
    for step in range(1, recipe.steps + 1):
        opt.zero_grad(set_to_none=True)
        feats = encoder_features(models[0], K, x)
        loss = sum(torch.mean((head_forward(m, K, feats) - y[d]) ** 2) for d, m in enumerate(models)) / H
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise CohortError(f"training diverged at step {step} (loss {losses[-1]}); lower --lr")
        if progress:
            progress(step, recipe.steps, losses[-1])
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for m in models:
            m.eval()
        feats = encoder_features(models[0], K, x)
        scores = [psnr(head_forward(m, K, feats), y[d]) for d, m in enumerate(models)]
    models = [m.to("cpu") for m in models]
    return models, CohortTrainResult(recipe, data.names, scores, losses, seconds, data.skipped, data.resized)


def _unique_params(models: list) -> list:
    seen, out = set(), []
    for m in models:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _coords(shape, dev):
    import torch

    from ..grid import make_grid

    return make_grid(shape, dtype=torch.float32, device=dev)


# ---------------------------------------------------------------- data-parallel training
def train_cohort_sharded(paths: list[Path], recipe: CohortRecipe, rank, progress: Progress | None = None):
    """Data-parallel cohort training under torch.distributed: rank r loads and owns images r, r + W, ...
    (W ranks) and their heads; the shared encoder lives on every rank and its gradients are summed
    over ranks (one ``all_reduce`` of a flat buffer per step), so every rank takes the same Adam step
    on the encoder. The loss is the single-process one, ``(1/H) sum_d MSE_d`` over all H images, and
    head d is initialised with the same seed as in one process, so the result equals ``train_cohort``
    up to the order of float sums (tested to float tolerance).

    Returns ``(models, result)`` on rank 0 (every head, as ``train_cohort`` does) and ``(None, None)``
    elsewhere. ``rank`` is an ``inrdiag.study.distributed.Rank``.
    """
    import torch
    import torch.distributed as dist

    from ..device import tune_malloc
    from ..fitting.targets import psnr
    from ..study.distributed import all_gather, gather

    tune_malloc()
    W, r = rank.world, rank.rank
    if len(paths) < W:
        raise CohortError(f"{len(paths)} images for {W} ranks; use at most {len(paths)} ranks")
    dev = torch.device(rank.device)
    if rank.threads:
        torch.set_num_threads(rank.threads)
    mine = list(range(r, len(paths), W))
    check_training_memory(len(mine), recipe.size * recipe.size, 3, recipe, dev)
    local = load_images([paths[i] for i in mine], recipe.size) if mine else None
    ok = [] if local is None else [mine[j] for j, p in enumerate(paths[i] for i in mine) if p.name in set(local.names)]
    c_local = 0 if local is None else int(local.values.shape[2])
    info = all_gather((ok, c_local), rank)
    order = sorted(i for part, _ in info for i in part)
    if not order:
        raise CohortError("no readable images: " + "; ".join(local.skipped if local else []))
    C = max(c for _, c in info)
    H = len(order)
    pos = {i: d for d, i in enumerate(order)}
    ids = [pos[i] for i in ok]  # this rank's global head indices
    values = None
    if local is not None:
        values = local.values
        if values.shape[2] < C:
            values = values.expand(-1, -1, C).contiguous()
            local.resized += [f"{n} (gray -> RGB)" for n in local.names]
        values = values.to(dev)
    from ..models.inits import build_model

    base = build_model(recipe.backbone, 2, C, recipe.depth, recipe.width, seed=recipe.seed).to(dev).train()
    heads = {}
    for d in ids:
        m = base if d == 0 else build_model(recipe.backbone, 2, C, recipe.depth, recipe.width,
                                            seed=recipe.seed + 7919 * d).to(dev).train()  # fmt: skip
        if d:
            share_encoder(base, m, recipe.shared_layers)
        heads[d] = m
    K = recipe.shared_layers
    enc = [p for k, p in base.named_parameters() if _is_shared(k, K)]
    enc_ids = {id(p) for p in enc}
    own = [p for m in heads.values() for p in m.parameters() if id(p) not in enc_ids]
    seen, params = set(), []
    for p in enc + own:
        if id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    opt = torch.optim.Adam(params, lr=recipe.lr)
    x = _coords((recipe.size, recipe.size), dev)
    losses = []
    t0 = time.perf_counter()
    for step in range(1, recipe.steps + 1):
        opt.zero_grad(set_to_none=False)
        feats = encoder_features(base, K, x)
        loss = feats.sum() * 0.0  # keeps the encoder in the graph on a rank without images
        for j, d in enumerate(ids):
            loss = loss + torch.mean((head_forward(heads[d], K, feats) - values[j]) ** 2)
        loss = loss / H
        loss.backward()
        flat = torch.cat([p.grad.reshape(-1) for p in enc] + [loss.detach().reshape(1)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        total = float(flat[-1])
        off = 0
        for p in enc:
            n = p.numel()
            p.grad.copy_(flat[off : off + n].view_as(p))
            off += n
        opt.step()
        losses.append(total)
        if not math.isfinite(total):
            raise CohortError(f"training diverged at step {step} (loss {total}); lower --lr")
        if progress and rank.main:
            progress(step, recipe.steps, total)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for m in heads.values():
            m.eval()
        base.eval()
        feats = encoder_features(base, K, x)
        scores = {d: psnr(head_forward(heads[d], K, feats), values[j]) for j, d in enumerate(ids)}
    states = {d: {k: v.cpu() for k, v in m.state_dict().items() if not _is_shared(k, K)} for d, m in heads.items()}
    names = {} if local is None else dict(zip(ids, local.names))
    part = (states, scores, names, [] if local is None else local.skipped, [] if local is None else local.resized)
    parts = gather(part, rank)
    if not rank.main:
        return None, None
    models = build_cohort(recipe, H, C)
    enc_state = {k: v.cpu() for k, v in base.state_dict().items() if _is_shared(k, K)}
    models[0].load_state_dict({**models[0].state_dict(), **enc_state})
    all_scores, all_names, skipped, resized = {}, {}, [], []
    for st, sc, nm, sk, rs in parts:
        for d, sd in st.items():
            models[d].load_state_dict({**models[d].state_dict(), **sd})
        all_scores.update(sc)
        all_names.update(nm)
        skipped += sk
        resized += rs
    for m in models:
        m.eval()
    res = CohortTrainResult(recipe, [all_names[d] for d in range(H)], [all_scores[d] for d in range(H)], losses,
                            seconds, skipped, resized)  # fmt: skip
    return models, res
