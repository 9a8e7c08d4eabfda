# NOTE FROM THE LEAD: read /work/wt/fitcohort/LEAD_NOTES_READ_FIRST.md now (rules, deadline 16:00 UTC, commit often). Delete this line when read.
"""Cohort INRs: one shared encoder fitted jointly on a cohort of signals, one head per signal,
and freeze-depth sweeps that reuse the encoder for new signals (DESIGN.md section 6).

Architecture: a CoordMLP of ``depth`` hidden layers and an output layer (``depth + 1`` linear
layers). The first ``K = shared_layers`` linear layers (and the encoding) form the encoder, shared
by every head; linear layers K..depth form each signal's head (at least its output layer).
Because every signal of a cohort lives on the same coordinate grid, the encoder's features are
computed once per step and fed to every head.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..device import resolve_device, tune_malloc
from ..errors import TargetError
from ..fitting.optim import adam_loop, training_layout, unique_parameters
from ..fitting.targets import IMAGE_SUFFIXES, load_target
from ..grid import check_memory, make_grid
from ..metrics import psnr, to_luma
from ..models.inits import FF_FEATURES, build_model
from ..models.mlp import CoordMLP
from ..progress import Progress
from ..seeds import check_seed
from ..study.distributed import Rank
from .file import cohort_state, is_encoder_key, read_cohort
from .recipe import BACKBONES, DEFAULT_LR, CohortError, CohortRecipe

__all__ = [
    "BACKBONES", "DEFAULT_LR", "CohortData", "CohortError", "CohortRecipe", "CohortTrainResult", "LoadedCohort",
    "build_cohort", "check_training_memory", "cohort_state", "list_images", "load_cohort", "load_images",
    "save_cohort", "share_encoder", "train_cohort", "train_cohort_sharded", "training_bytes",
]  # fmt: skip


# ---------------------------------------------------------------- data
@dataclass
class CohortData:
    names: list[str]
    #: H x N x C float32 values in [0, 1], on the grid of ``shape``.
    values: torch.Tensor
    shape: tuple[int, ...]
    skipped: list[str] = field(default_factory=list)
    #: Images whose size differed from ``shape`` (resized) or whose channels were expanded.
    resized: list[str] = field(default_factory=list)


def list_images(folder: str | Path) -> tuple[list[Path], list[str]]:
    """Image files of ``folder`` in sorted order, and the names of other files (skipped, listed)."""
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
    return CohortData(names=names, values=torch.stack(vals), shape=(size, size), skipped=skipped, resized=resized)


# ---------------------------------------------------------------- model
def build_cohort(recipe: CohortRecipe, heads: int, out_features: int, seed: int | None = None) -> list[CoordMLP]:
    """``heads`` CoordMLPs that share one encoder: the same encoding and linear modules 0..K-1.
    Head d is initialised with seed ``seed + 7919 d`` (then its encoder replaced by head 0's)."""
    seed = recipe.seed if seed is None else check_seed(seed, "seed")
    base = _head_model(recipe, out_features, seed, 0, None)
    return [base] + [_head_model(recipe, out_features, seed, d, base) for d in range(1, heads)]


def _head_model(recipe: CohortRecipe, out_features: int, seed: int, d: int, base: CoordMLP | None) -> CoordMLP:
    """Head ``d`` of a cohort (seed ``seed + 7919 d``, modulo 2^32 like every derived stream, ``inrdiag.seeds``),
    sharing ``base``'s encoder when given."""
    m = build_model(recipe.backbone, 2, out_features, recipe.depth, recipe.width, seed=(seed + 7919 * d) % 2**32)
    assert isinstance(m, CoordMLP)
    if base is not None:
        share_encoder(base, m, recipe.shared_layers)
    return m


def share_encoder(src: CoordMLP, dst: CoordMLP, K: int) -> None:
    """Make ``dst`` use ``src``'s encoding and linear layers 0..K-1 (the same module objects)."""
    dst.encoding = src.encoding
    for k in range(K):
        dst.linears[k] = src.linears[k]
        if str(k) in src.norms:
            dst.norms[str(k)] = src.norms[str(k)]


def save_cohort(models: list[CoordMLP], recipe: CohortRecipe, names: list[str], path: str | Path,
                provenance: dict[str, Any] | None = None, force: bool = False) -> Path:  # fmt: skip
    """Write the cohort ``models`` (sharing one encoder) as one inrdiag file (layout: ``cohort.file``)."""
    from ..checkpoints.save import save

    meta = {"cohort": {"shared_layers": recipe.shared_layers, "heads": len(models), "names": names}}
    prov = {"recipe": recipe.to_dict(), **(provenance or {})}
    return save(models[0], path, provenance=prov, force=force, extra_metadata=meta,
                tensors=cohort_state(list(models), recipe.shared_layers))  # fmt: skip


@dataclass
class LoadedCohort:
    """Every head of a cohort checkpoint (sharing one encoder, float32, eval mode), its recipe and the
    training image of each head."""

    models: list[CoordMLP]
    recipe: CohortRecipe
    names: list[str]


def load_cohort(path: str | Path) -> LoadedCohort:
    """All heads of an inrdiag cohort checkpoint, sharing one encoder (eval mode)."""
    cf = read_cohort(path)
    recipe = cf.recipe()
    models: list[CoordMLP] = []
    for d in range(len(cf.heads)):
        m = CoordMLP(cf.spec)
        try:
            m.load_state_dict(cf.head_state(d), strict=True)
        except RuntimeError as exc:
            raise CohortError(
                f"{path}: head {d} does not match the stored architecture ({str(exc).splitlines()[0]})"
            ) from None
        if d:
            share_encoder(models[0], m, cf.shared_layers)
        models.append(m.to(torch.float32).eval())
    return LoadedCohort(models=models, recipe=recipe, names=cf.names)


# ---------------------------------------------------------------- training
@dataclass
class CohortTrainResult:
    """A trained cohort: the recipe, each image's name, final PSNR and loss curve, and the heads
    (``models``: CoordMLPs sharing one encoder)."""

    recipe: CohortRecipe
    names: list[str]
    #: PSNR of each image's head at the end.
    psnr: list[float]
    #: The joint loss of every step.
    loss: list[float]
    seconds: float
    skipped: list[str]
    resized: list[str]
    #: The trained heads (sharing one encoder, on the CPU, eval mode).
    models: list[CoordMLP] = field(default_factory=list, repr=False)

    @property
    def psnr_mean(self) -> float:
        return sum(self.psnr) / len(self.psnr)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.to_dict(), "images": self.names, "psnr": self.psnr,
            "psnr_mean": self.psnr_mean, "final_loss": self.loss[-1] if self.loss else None,
            "loss_curve": self.loss, "seconds": self.seconds, "skipped": self.skipped, "resized": self.resized,
        }  # fmt: skip


def training_bytes(heads: int, points: int, channels: int, recipe: CohortRecipe) -> float:
    """Estimated peak memory (bytes) of joint training of ``heads`` heads on ``points`` points each.

    float32 throughout: the targets (H N C); the encoder's activations kept for the backward pass
    (pre- and post-activation of each of its K layers and the encoding, N x width each, x2 for the
    gradients flowing back); each head's activations likewise (depth - K hidden layers + its output);
    parameters with their gradients and Adam's two moments (x4)."""
    w, K, L = recipe.width, recipe.shared_layers, recipe.depth
    enc_feats = FF_FEATURES if recipe.backbone == "ff" else 2
    encoder_acts = points * (enc_feats + 2 * K * w) * 2
    head_acts = heads * points * (2 * (L - K) * w + 2 * channels) * 2
    encoder_params = (enc_feats + 1) * w + (K - 1) * (w + 1) * w
    head_params = heads * ((L - K) * (w + 1) * w + (w + 1) * channels)
    return 4.0 * (
        heads * points * channels + points * 2 + encoder_acts + head_acts + 4 * (encoder_params + head_params)
    )


def check_training_memory(heads: int, points: int, channels: int, recipe: CohortRecipe,
                          device: torch.device | str | None = None) -> None:  # fmt: skip
    """Refuse (ResourceError, naming --size) a cohort whose training would not fit in memory: half the
    RAM on the CPU, 90% of the GPU's memory on CUDA. Runs before any tensor is allocated."""
    limit = None
    if device is not None and torch.device(device).type == "cuda":
        limit = 0.9 * torch.cuda.get_device_properties(device).total_memory
    side = int(round(points**0.5))
    check_memory(training_bytes(heads, points, channels, recipe),
                 f"cohort training of {heads} image(s) at {side}x{side} through {recipe.depth}x{recipe.width}",
                 "--size (or fewer images per process: more ranks with torchrun, or a smaller --width)",
                 limit)  # fmt: skip


def _joint_loss(heads: list[CoordMLP], K: int, feats: torch.Tensor, values: list[torch.Tensor],
                H: int) -> torch.Tensor:  # fmt: skip
    """``(1/H) sum_d MSE(head_d(feats), values_d)`` over the given heads (all H in one process)."""
    loss = feats.sum() * 0.0 if not heads else None  # keeps the encoder in the graph on a rank without images
    for m, y in zip(heads, values):
        term = torch.mean((m.head(feats, K) - y) ** 2)
        loss = term if loss is None else loss + term
    assert loss is not None
    return loss / H


def train_cohort(data: CohortData, recipe: CohortRecipe, device: str = "auto",
                 progress: Progress | None = None) -> CohortTrainResult:  # fmt: skip
    """Fit the shared encoder and every head jointly: Adam on the mean over images of each MSE.
    ``progress(step, steps, loss, NaN)`` on report steps. The result holds the trained heads (``.models``)."""
    tune_malloc()
    dev = resolve_device(device)
    H, N, C = data.values.shape
    check_training_memory(H, N, C, recipe, dev)
    models = build_cohort(recipe, H, C)
    for m in models:
        m.to(dev).train()
    x = make_grid(data.shape, dtype=torch.float32, device=dev)
    y = data.values.to(dev)
    targets = [y[d] for d in range(H)]
    K = recipe.shared_layers

    def grad_step(step: int) -> torch.Tensor:
        loss = _joint_loss(models, K, models[0].features(x, K - 1), targets, H)
        loss.backward()
        return loss.detach()

    t0 = time.perf_counter()
    with training_layout(models):
        run = adam_loop(unique_parameters(p for m in models for p in m.parameters()), recipe.learning_rate, recipe.steps, grad_step, progress=progress,
                        error=CohortError, what="cohort training", device=dev)  # fmt: skip
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for m in models:
            m.eval()
        feats = models[0].features(x, K - 1)
        scores = [psnr(m.head(feats, K), y[d]) for d, m in enumerate(models)]
    models = [m.to("cpu") for m in models]
    return CohortTrainResult(recipe=recipe, names=list(data.names), psnr=scores, loss=run.losses.tolist(),
                             seconds=seconds, skipped=list(data.skipped), resized=list(data.resized),
                             models=models)  # fmt: skip


# ---------------------------------------------------------------- data-parallel training
def train_cohort_sharded(paths: list[Path], recipe: CohortRecipe, rank: Rank,
                         progress: Progress | None = None) -> CohortTrainResult | None:  # fmt: skip
    """Data-parallel cohort training under torch.distributed: rank r loads and owns images r, r + W, ...
    (W ranks) and their heads; the shared encoder lives on every rank and its gradients are summed
    over ranks (one ``all_reduce`` of a flat buffer per step), so every rank takes the same Adam step
    on the encoder. The loss is the single-process one, ``(1/H) sum_d MSE_d`` over all H images, and
    head d is initialised with the same seed as in one process, so the result equals ``train_cohort``
    up to the order of float sums (tested to float tolerance).

    Returns the result (every head in ``.models``, as ``train_cohort``) on rank 0 and None elsewhere.
    """
    import torch.distributed as dist

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
    values: list[torch.Tensor] = []
    if local is not None:
        v = local.values
        if v.shape[2] < C:
            v = v.expand(-1, -1, C).contiguous()
            local.resized += [f"{n} (gray -> RGB)" for n in local.names]
        values = [t for t in v.to(dev)]
    base = _head_model(recipe, C, recipe.seed, 0, None).to(dev).train()
    heads = {d: (base if d == 0 else _head_model(recipe, C, recipe.seed, d, base).to(dev).train()) for d in ids}
    K = recipe.shared_layers
    enc = [p for k, p in base.named_parameters() if is_encoder_key(k, K)]
    enc_ids = {id(p) for p in enc}
    own = [p for m in heads.values() for p in m.parameters() if id(p) not in enc_ids]
    params = unique_parameters(enc + own)
    x = make_grid((recipe.size, recipe.size), dtype=torch.float32, device=dev)
    head_list = [heads[d] for d in ids]

    def grad_step(step: int) -> torch.Tensor:
        loss = _joint_loss(head_list, K, base.features(x, K - 1), values, H)
        loss.backward()
        flat = torch.cat([_grad(p).reshape(-1) for p in enc] + [loss.detach().reshape(1)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        off = 0
        for p in enc:
            n = p.numel()
            _grad(p).copy_(flat[off : off + n].view_as(p))
            off += n
        return flat[-1]

    t0 = time.perf_counter()
    with training_layout([base, *head_list]):
        run = adam_loop(params, recipe.learning_rate, recipe.steps, grad_step,
                        progress=progress if rank.main else None, error=CohortError, what="cohort training",
                        device=dev)  # fmt: skip
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for m in heads.values():
            m.eval()
        base.eval()
        feats = base.features(x, K - 1)
        scores = {d: psnr(heads[d].head(feats, K), values[j]) for j, d in enumerate(ids)}
    states = {d: {k: v.cpu() for k, v in m.state_dict().items() if not is_encoder_key(k, K)} for d, m in heads.items()}
    names = {} if local is None else dict(zip(ids, local.names))
    part = (states, scores, names, [] if local is None else local.skipped, [] if local is None else local.resized)
    parts = gather(part, rank)
    if not rank.main or parts is None:
        return None
    models = build_cohort(recipe, H, C)
    enc_state = {k: v.cpu() for k, v in base.state_dict().items() if is_encoder_key(k, K)}
    models[0].load_state_dict({**models[0].state_dict(), **enc_state})
    all_scores: dict[int, float] = {}
    all_names: dict[int, str] = {}
    skipped: list[str] = []
    resized: list[str] = []
    for st, sc, nm, sk, rs in parts:
        for d, sd in st.items():
            models[d].load_state_dict({**models[d].state_dict(), **sd})
        all_scores.update(sc)
        all_names.update(nm)
        skipped += sk
        resized += rs
    for m in models:
        m.eval()
    return CohortTrainResult(recipe=recipe, names=[all_names[d] for d in range(H)],
                             psnr=[all_scores[d] for d in range(H)], loss=run.losses.tolist(), seconds=seconds,
                             skipped=skipped, resized=resized, models=models)  # fmt: skip


def _grad(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:  # pragma: no cover - every encoder parameter is in the graph of every rank's loss
        raise CohortError("an encoder parameter got no gradient")
    return p.grad
