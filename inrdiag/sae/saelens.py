"""SAE files in SAELens's layout: ``sae_weights.safetensors`` (W_enc, W_dec, b_enc, b_dec) + ``cfg.json``.

What SAELens 6 does, and so what these functions match (read from its source, ``sae_lens/saes/*.py`` and
``sae_lens/loading/pretrained_sae_loaders.py``):

- ``cfg.json`` keeps its nested ``metadata`` (model, hook, and anything else) only when
  ``metadata.sae_lens_version`` parses as >= 6.0.0-rc.0; otherwise SAELens treats the file as pre-6.0 and
  keeps only a fixed list of top-level keys. So ``save_sae`` writes a 6.x version string.
- ``standard``: ``f = relu((x - b_dec) W_enc + b_enc)``, ``x_hat = f W_dec + b_dec``.
- ``topk``: ``h = (x - b_dec) W_enc + b_enc``; with ``rescale_acts_by_decoder_norm`` (SAELens's training
  default) ``h_j *= ||W_dec[j]||``; ``f`` = ReLU of the k largest ``h``; decoding divides ``f_j`` by
  ``||W_dec[j]||`` again. Folding ``n_j = ||W_dec[j]||`` into the weights (``W_enc[:, j] n_j``, ``b_enc[j] n_j``,
  ``W_dec[j] / n_j``) gives the same codes and reconstruction with no rescaling (SAELens's ``fold_W_dec_norm``),
  which is how it is loaded here.
- ``jumprelu``: ``f = relu(h) * (h > threshold)`` with a per-atom ``threshold`` tensor (older training files:
  ``log_threshold``); a negative threshold gates nothing beyond the ReLU. BatchTopK SAEs are saved for
  inference as ``jumprelu`` with one shared threshold (its training files, ``batchtopk``, hold a scalar
  ``topk_threshold`` and are converted the same way).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..files import atomic_dir, check_writable_dir
from ..schema import SCHEMA_VERSION
from .model import CFG_FILE, WEIGHTS_FILE, JumpReLUSAE, SAEConfig, SAEError, SparseAutoencoder, describe_sae, make_sae

PathLike = str | os.PathLike[str]

#: ``metadata.sae_lens_version`` written to cfg.json: the SAELens 6 config format (SAELens writes its own
#: version, e.g. "6.18.0"; any value >= 6.0.0-rc.0 makes it keep the metadata as written).
SAELENS_FORMAT_VERSION = "6.0.0"
#: cfg.json keys of SAELens training configs that describe how an SAE was trained (shown when present).
SAELENS_TRAINING_KEYS = ("l1_coefficient", "lp_norm", "l0_coefficient", "aux_loss_coefficient", "decoder_init_norm",
                         "jumprelu_init_threshold", "jumprelu_bandwidth", "topk_threshold_lr", "lr",
                         "training_tokens", "train_batch_size_tokens", "context_size", "dataset_path")  # fmt: skip


def saelens_cfg(sae: SparseAutoencoder, cfg: SAEConfig, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """cfg.json as SAELens 6 writes it: inference fields at top level, everything else under ``metadata``
    (kept by SAELens because ``metadata.sae_lens_version`` is a 6.x version)."""
    arch = sae.architecture
    out: dict[str, Any] = {
        "architecture": arch, "d_in": sae.d_in, "d_sae": sae.d_sae,
        "dtype": str(sae.W_enc.dtype).replace("torch.", ""),
        "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
                     "inrdiag_version": __version__, "schema_version": SCHEMA_VERSION, **(meta or {})},
    }  # fmt: skip
    if arch == "topk":
        out["k"] = sae.k
        out["rescale_acts_by_decoder_norm"] = False  # decoder norms are folded into the weights
    out["metadata"]["inrdiag"] = asdict(cfg)
    return out


def check_sae_out(folder: PathLike, force: bool = False, inputs: Iterable[PathLike | None] = ()) -> list[Path]:
    """Refuse (before any work) an -o folder whose SAE files exist (without ``force``), a file in its place,
    a folder holding other files (it is replaced as a whole), an input among its files, or a missing parent
    folder. Returns the two file paths."""
    d = check_writable_dir(folder, [WEIGHTS_FILE, CFG_FILE], force, inputs)
    return [d / WEIGHTS_FILE, d / CFG_FILE]


def save_sae(sae: SparseAutoencoder, cfg: SAEConfig, folder: PathLike, meta: dict[str, Any] | None = None,
             force: bool = False, inputs: Iterable[PathLike | None] = ()) -> list[str]:  # fmt: skip
    """Write ``folder/sae_weights.safetensors`` and ``folder/cfg.json`` (SAELens's layout), as a whole: both go
    to a temp folder that replaces ``folder`` (``inrdiag.files.atomic_dir``), so the pair always belongs together.
    Returns the two file paths."""
    inputs = list(inputs)
    paths = check_sae_out(folder, force, inputs)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sae.state_dict().items()}
    text = json.dumps(saelens_cfg(sae, cfg, meta), indent=2) + "\n"
    with atomic_dir(folder, [WEIGHTS_FILE, CFG_FILE], force, inputs) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / CFG_FILE).write_text(text)
    return [str(p) for p in paths]


def loaded_config(sae: SparseAutoencoder, cfg: dict[str, Any]) -> SAEConfig:
    """The SAEConfig describing a loaded SAE (its training settings when inrdiag wrote it; steps 0 otherwise)."""
    meta = _meta(cfg).get("inrdiag") or {}
    known = {f.name for f in fields(SAEConfig)}
    base = {k: v for k, v in meta.items() if k in known} if isinstance(meta, dict) else {}
    if not base:
        base = {"steps": 0}
    base.update(atoms=sae.d_sae, kind=sae.kind)
    if sae.kind == "topk":
        base["k"] = sae.k
    try:
        out = SAEConfig(**base)
        out.validate()
        return out
    except (TypeError, ValueError, SAEError):  # foreign or odd metadata: describe the SAE only
        return describe_sae(sae)


def _meta(cfg: dict[str, Any]) -> dict[str, Any]:
    meta = cfg.get("metadata")
    return meta if isinstance(meta, dict) else {}


def sae_file_info(folder: PathLike, sae: SparseAutoencoder, cfg: dict[str, Any]) -> dict[str, Any]:
    """What a loaded SAE file says about itself, for reports: its architecture and sparsity settings as
    the file states them, who wrote it, the model and hook it was trained on, and its training settings
    (inrdiag's ``metadata.inrdiag``, or the training keys of a SAELens training config)."""
    meta = _meta(cfg)
    arch = sae.architecture
    info: dict[str, Any] = {
        "folder": str(folder), "architecture": arch, "d_in": sae.d_in, "d_sae": sae.d_sae,
        "dtype": str(sae.W_enc.dtype).replace("torch.", ""),
        "written_by": "inrdiag" if isinstance(meta.get("inrdiag"), dict) else "SAELens",
        "sae_lens_version": meta.get("sae_lens_version", cfg.get("sae_lens_version")),
        "model_name": meta.get("model_name", cfg.get("model_name")),
        "hook_name": meta.get("hook_name", cfg.get("hook_name", cfg.get("hook_point"))),
        "apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", True)),
    }  # fmt: skip
    if arch == "topk":
        info["k"] = sae.k
        info["rescale_acts_by_decoder_norm"] = sae.rescaled
    if isinstance(sae, JumpReLUSAE):
        t = sae.threshold.detach().double().clamp_min(0)
        info["threshold"] = {"min": float(t.min()), "median": float(t.median()), "max": float(t.max())}
        info["converted_from"] = sae.converted_from
    ours = meta.get("inrdiag")
    if isinstance(ours, dict) and isinstance(ours.get("steps"), int) and ours["steps"] > 0:
        info["training"] = {"by": "inrdiag", **ours}
    else:  # a SAELens training config carries its settings at top level; an inference config carries none
        theirs = {k: cfg[k] for k in SAELENS_TRAINING_KEYS if k in cfg}
        info["training"] = {"by": "SAELens", **theirs} if theirs else None
    return info


def _flag(d: Path, cfg: dict[str, Any], key: str, default: bool) -> bool:
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise SAEError(f"{d / CFG_FILE}: {key} must be true or false, got {v!r}")
    return v


@dataclass
class LoadedSAE:
    """What ``load_sae`` returns: the SAE (eval mode), the folder and its cfg.json as read."""

    sae: SparseAutoencoder
    folder: Path
    #: cfg.json as the file states it.
    cfg: dict[str, Any]

    @cached_property
    def config(self) -> SAEConfig:
        """The SAEConfig describing it (``loaded_config``): inrdiag's training settings, else steps 0."""
        return loaded_config(self.sae, self.cfg)

    @cached_property
    def info(self) -> dict[str, Any]:
        """What the file says about itself (``sae_file_info``): architecture, who wrote it, model and hook."""
        return sae_file_info(self.folder, self.sae, self.cfg)


def load_sae(folder: PathLike) -> LoadedSAE:
    """Read an SAE saved by ``save_sae`` or by SAELens: architectures ``standard``, ``topk`` (with or without
    ``rescale_acts_by_decoder_norm``, folded exactly), ``jumprelu`` (also BatchTopK's inference files) and
    ``batchtopk`` training files; SAELens before 6.0 wrote TopK SAEs as ``standard`` with
    ``activation_fn_str: "topk"``."""
    if not isinstance(folder, (str, os.PathLike)):
        raise SAEError(f"load_sae needs a folder path (str or PathLike), got {type(folder).__name__}")
    d = Path(os.path.expanduser(folder))
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
    if not isinstance(arch, str) or not (act is None or isinstance(act, str)) or not isinstance(kwargs, dict):
        raise SAEError(
            f"{d / CFG_FILE}: architecture / activation_fn_str must be strings, activation_fn_kwargs an object"
        )
    if arch == "standard" and act == "topk":  # SAELens < 6.0
        arch, cfg = "topk", {**cfg, "k": kwargs.get("k", cfg.get("k"))}
    allowed = ("standard", "topk", "jumprelu", "batchtopk")
    if arch not in allowed:
        raise SAEError(f"{d}: SAE architecture {arch!r} is not supported ({', '.join(allowed)})")
    if arch == "standard" and act not in (None, "relu"):
        raise SAEError(f"{d}: activation {act!r} is not supported (relu, topk)")
    for key, ok in (("normalize_activations", (None, "none")), ("reshape_activations", (None, "none"))):
        if cfg.get(key) not in ok:
            raise SAEError(f"{d}: {key} = {cfg.get(key)!r} is not supported")
    # SAELens's defaults: False for the inference TopK config, True for its training configs (batchtopk)
    rescale = arch in ("topk", "batchtopk") and _flag(d, cfg, "rescale_acts_by_decoder_norm", arch == "batchtopk")
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
    if arch == "topk":
        raw = cfg.get("k")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or int(raw) != raw:
            raise SAEError(f"{d}: a topk SAE needs an integer k in {CFG_FILE}, got {raw!r}")
        k = int(raw)
        if not 1 <= k <= d_sae:
            raise SAEError(f"{d}: k = {k} is outside 1..d_sae ({d_sae})")
    threshold, source = None, None
    if arch in ("jumprelu", "batchtopk"):
        threshold, source = _threshold(d, arch, state, d_sae)
    tensors = [W_enc, W_dec, b_enc, b_dec] + ([threshold] if threshold is not None else [])
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise SAEError(f"{d}: the SAE's weights hold NaN or Inf")
    dt = W_enc.dtype
    sae: SparseAutoencoder
    if threshold is not None:
        sae = JumpReLUSAE(d_in, d_sae, dt)
        sae.converted_from = source
    else:
        sae = make_sae(d_in, d_sae, {"topk": "topk", "standard": "relu"}[arch], k, dtype=dt)
    sae.load_state_dict({"W_enc": W_enc, "b_enc": b_enc.to(dt), "W_dec": W_dec.to(dt), "b_dec": b_dec.to(dt),
                         **({"threshold": threshold.to(dt)} if threshold is not None else {})}, strict=True)  # fmt: skip
    with torch.no_grad():
        if not _flag(d, cfg, "apply_b_dec_to_input", True):  # no subtraction: fold -b_dec W_enc into b_enc
            sae.b_enc.add_(sae.b_dec @ sae.W_enc)
        if rescale:
            _fold_decoder_norms(d, sae)
    sae.rescaled = rescale
    return LoadedSAE(sae=sae.eval(), folder=d, cfg=cfg)


def _threshold(d: Path, arch: str, state: dict[str, torch.Tensor], d_sae: int) -> tuple[torch.Tensor, str | None]:
    """The per-atom JumpReLU threshold: ``threshold``, exp(``log_threshold``) (older training files), or a
    BatchTopK training file's scalar ``topk_threshold`` for every atom (what SAELens saves for inference)."""
    src: str | None
    if "threshold" in state:
        t, src = state["threshold"], None
    elif "log_threshold" in state:
        t, src = torch.exp(state["log_threshold"].double()), "log_threshold"
    elif "topk_threshold" in state and state["topk_threshold"].numel() == 1:
        t, src = torch.full((d_sae,), float(state["topk_threshold"]), dtype=torch.float64), "topk_threshold"
    else:
        raise SAEError(f"{d}: a {arch} SAE needs a 'threshold' tensor (d_sae,) in {WEIGHTS_FILE}")
    if tuple(t.shape) != (d_sae,):
        raise SAEError(f"{d}: threshold has shape {list(t.shape)}, expected [{d_sae}]")
    return t, src


def _fold_decoder_norms(d: Path, sae: SparseAutoencoder) -> None:
    """``rescale_acts_by_decoder_norm``: with n_j = ||W_dec[j]||, SAELens selects and reports the codes of
    ``h * n`` and decodes ``(f / n) W_dec``. The same SAE without rescaling has ``W_enc[:, j] n_j``,
    ``b_enc[j] n_j`` and ``W_dec[j] / n_j`` (computed in float64, then rounded once to the file's dtype)."""
    n = sae.W_dec.detach().double().norm(dim=1)
    if not bool((n > 0).all()):
        j = int((n <= 0).nonzero()[0])
        raise SAEError(f"{d}: rescale_acts_by_decoder_norm with a zero decoder row (atom {j}): codes undefined")
    dt = sae.W_enc.dtype
    sae.W_enc.copy_((sae.W_enc.double() * n).to(dt))
    sae.b_enc.copy_((sae.b_enc.double() * n).to(dt))
    sae.W_dec.copy_((sae.W_dec.double() / n[:, None]).to(dt))
    # a BatchTopK threshold already applies to the rescaled pre-activations h * n: it stays as it is
