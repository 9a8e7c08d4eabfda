"""SAE files in SAELens's layout: ``sae_weights.safetensors`` (W_enc, W_dec, b_enc, b_dec) + ``cfg.json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .sae import CFG_FILE, SAELENS_ARCH, WEIGHTS_FILE, SAEConfig, SAEError, make_sae


def saelens_cfg(sae, cfg: SAEConfig, meta: dict | None = None) -> dict[str, Any]:
    out = {
        "architecture": SAELENS_ARCH[sae.kind], "d_in": sae.d_in, "d_sae": sae.d_sae,
        "dtype": str(sae.W_enc.dtype).replace("torch.", ""),
        "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none", "metadata": dict(meta or {}),
    }  # fmt: skip
    if sae.kind == "topk":
        out["k"] = sae.k
    out["metadata"]["inrdiag"] = asdict(cfg)
    return out


def check_sae_out(folder, force: bool = False, inputs=()) -> list[Path]:
    """Refuse (before any work) an -o folder whose SAE files exist (without ``force``), a file in its place,
    a folder holding other files (it is replaced as a whole), an input among its files, or a missing parent
    folder. Returns the two file paths."""
    from .io import check_writable_dir

    d = check_writable_dir(folder, [WEIGHTS_FILE, CFG_FILE], force, inputs)
    return [d / WEIGHTS_FILE, d / CFG_FILE]


def save_sae(sae, cfg: SAEConfig, folder, meta: dict | None = None, force: bool = False, inputs=()) -> list[str]:
    """Write ``folder/sae_weights.safetensors`` and ``folder/cfg.json`` (SAELens's layout), as a whole: both go
    to a temp folder that replaces ``folder`` (``inrdiag.io.atomic_dir``), so the pair always belongs together."""
    from safetensors.torch import save_file

    from .io import atomic_dir

    paths = check_sae_out(folder, force, inputs)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sae.state_dict().items()}
    text = json.dumps(saelens_cfg(sae, cfg, meta), indent=2) + "\n"
    with atomic_dir(folder, [WEIGHTS_FILE, CFG_FILE], force, inputs) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / CFG_FILE).write_text(text)
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
        out = SAEConfig(**base)
        out.validate()
        return out
    except (TypeError, ValueError, SAEError):  # foreign or odd metadata: describe the SAE only
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
    if not isinstance(arch, str) or not (act is None or isinstance(act, str)) or not isinstance(kwargs, dict):
        raise SAEError(
            f"{d / CFG_FILE}: architecture / activation_fn_str must be strings, activation_fn_kwargs an object"
        )
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
        raw = cfg.get("k")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or int(raw) != raw:
            raise SAEError(f"{d}: a topk SAE needs an integer k in {CFG_FILE}, got {raw!r}")
        k = int(raw)
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
