"""Read and write checkpoints: inrdiag's safetensors format, plain safetensors, torch state dicts.

Reading never unpickles arbitrary objects: ``.pt/.pth/.ckpt`` files go through
``torch.load(weights_only=True)``. The tensors found are then matched to a coordinate MLP by
``inrdiag.layouts``; this module only gets the flat ``{key: tensor}`` dict out of the file.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError

#: Metadata key of inrdiag's own safetensors files, and the format version written.
METADATA_KEY = "inrdiag"
FORMAT_VERSION = 1
#: Wrapper entries that hold a state dict, most specific first (Lightning, FINER, nerfstudio, ...).
WRAPPER_KEYS = (
    "state_dict", "model_state_dict", "model_state", "state", "model", "net", "network",
    "module", "pipeline", "params", "ema", "weights",
)  # fmt: skip


@dataclass
class RawCheckpoint:
    """What a file held: its tensors under flat dotted keys, plus what was not a tensor."""

    path: str
    file_format: str
    tensors: dict[str, Any]
    metadata: dict[str, Any] | None = None
    #: Non-tensor entries (key: type) and entries outside the chosen state dict (key: why).
    skipped: dict[str, str] = field(default_factory=dict)
    #: The wrapper entry the state dict was taken from ("" when the file is a bare state dict).
    wrapper: str = ""


def read_checkpoint(path: str | os.PathLike) -> RawCheckpoint:
    """Read a checkpoint file into flat ``{dotted key: tensor}`` form (no model is built here)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder; expected a checkpoint file (.safetensors/.pt/.pth/.ckpt)")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p} is empty")
    with open(p, "rb") as f:
        head = f.read(8)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return _read_torch(p)
    if len(head) == 8:
        n = struct.unpack("<Q", head)[0]
        if 2 <= n <= size - 8:
            with open(p, "rb") as f:
                f.seek(8)
                first = f.read(1)
            if first == b"{":
                return _read_safetensors(p)
        elif p.suffix == ".safetensors":
            raise CheckpointError(f"{p}: truncated or corrupt safetensors file (header says {n} bytes)")
    raise CheckpointError(f"{p}: not a safetensors file or a torch checkpoint (unrecognised content)")


def _read_safetensors(p: Path) -> RawCheckpoint:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types and OSError/ValueError
        raise CheckpointError(f"{p}: truncated or corrupt safetensors file ({_one_line(exc)})") from None
    metadata = None
    if METADATA_KEY in meta:
        try:
            metadata = json.loads(meta[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{p}: metadata '{METADATA_KEY}' is not valid JSON ({exc})") from None
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{p}: metadata '{METADATA_KEY}' must be a JSON object")
    fmt = "safetensors (inrdiag metadata)" if metadata is not None else "safetensors"
    skipped = {f"__metadata__.{k}": "string metadata" for k in meta if k != METADATA_KEY}
    return RawCheckpoint(str(p), fmt, tensors, metadata, skipped)


def _read_torch(p: Path) -> RawCheckpoint:
    import pickle

    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{p}: not a plain state dict; refusing to unpickle arbitrary objects "
            f"(weights_only load failed: {_one_line(exc)[:160]})"
        ) from None
    except Exception as exc:  # zip errors, EOF, bad magic: a damaged file
        raise CheckpointError(f"{p}: truncated or corrupt torch checkpoint ({_one_line(exc)[:160]})") from None
    flat: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{p} holds a single tensor, not a state dict")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state dict")
    _flatten(obj, "", flat, skipped)
    tensors, wrapper, outside = _unwrap(flat)
    skipped.update(outside)
    return RawCheckpoint(str(p), "torch (weights_only)", tensors, None, skipped, wrapper)


def _flatten(obj: Any, prefix: str, out: dict[str, Any], skipped: dict[str, str]) -> None:
    import torch

    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[key] = v
        elif isinstance(v, (dict, list, tuple)) and len(v) > 0:
            _flatten(v, key + ".", out, skipped)
        else:
            skipped[key] = type(v).__name__


def _unwrap(flat: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, str]]:
    """Descend into wrapper entries (``state_dict``, ``model_state``, ...) while there is one.

    Tensors outside the chosen entry (optimizer state, EMA copies, ...) are returned as skipped,
    with the reason, so ``inrdiag info`` can list them.
    """
    wrapper = ""
    outside: dict[str, str] = {}
    while True:
        tops = {k.split(".", 1)[0] for k in flat}
        pick = next((w for w in WRAPPER_KEYS if w in tops), None)
        if pick is None or not any("." in k for k in flat if k.startswith(pick + ".")):
            return flat, wrapper, outside
        inner = {k[len(pick) + 1 :]: v for k, v in flat.items() if k.startswith(pick + ".")}
        for k in flat:
            if not k.startswith(pick + "."):
                outside[(wrapper + "." if wrapper else "") + k] = f"outside '{pick}'"
        # Only descend into a wrapper that holds 2-D weights; else the file is a bare state dict
        # whose module happens to be called e.g. 'model'.
        if not any(getattr(v, "ndim", 0) == 2 for v in inner.values()):
            return flat, wrapper, outside
        if len(tops) > 1 and pick in ("model", "net", "network", "module") and _looks_flat(flat, pick):
            return flat, wrapper, outside
        wrapper = (wrapper + "." if wrapper else "") + pick
        flat = inner


def _looks_flat(flat: dict[str, Any], pick: str) -> bool:
    """True when other top-level entries also hold 2-D weights: 'model.' is then a module name."""
    return any(getattr(v, "ndim", 0) == 2 for k, v in flat.items() if not k.startswith(pick + "."))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def save(
    model,
    path: str | os.PathLike,
    provenance: dict | None = None,
    force: bool = False,
    extra_metadata: dict | None = None,
    tensors: dict | None = None,
) -> Path:
    """Write ``model`` (a CoordMLP) as one inrdiag ``.safetensors`` file, atomically.

    The metadata key ``inrdiag`` holds ``{"format": 1, "arch": ArchSpec, "provenance": {...}}``,
    so the file loads with no flags. ``tensors`` replaces the model's state dict (cohort files).
    Refuses to overwrite an existing file unless ``force``.
    """
    from safetensors.torch import save_file

    from . import __version__
    from .io import atomic_write

    prov = {"inrdiag_version": __version__, **(provenance or {})}
    meta = {"format": FORMAT_VERSION, "arch": model.spec.to_dict(), "provenance": prov}
    meta.update(extra_metadata or {})
    state = tensors if tensors is not None else model.state_dict()
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    text = json.dumps(meta, sort_keys=True, allow_nan=False)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={METADATA_KEY: text}), force)
