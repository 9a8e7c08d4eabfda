"""Read and write checkpoints: inrdiag's safetensors format, plain safetensors, torch state dicts.

Reading never unpickles arbitrary objects: ``.pt/.pth/.ckpt`` files go through
``torch.load(weights_only=True)``. The tensors found are then matched to a coordinate MLP by
``inrdiag.checkpoints.layouts``; this module only gets the flat ``{key: tensor}`` dict out of the file.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..errors import CheckpointError, InrdiagError, SpecError
from ..grid import check_memory
from ..models.spec import ArchSpec, is_encoder_key

#: Metadata key of inrdiag's own safetensors files, and the format version written.
METADATA_KEY = "inrdiag"
FORMAT_VERSION = 1
#: More tensors than this is not a coordinate-MLP checkpoint (a large one has a few hundred);
#: refused from the file's index before torch unpickles them one by one (~0.2 ms each).
MAX_TENSORS = 20_000
#: A safetensors header (the JSON index) larger than this describes more than MAX_TENSORS tensors.
MAX_HEADER_BYTES = 32 * 2**20
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
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] | None = None
    #: Non-tensor entries (key: type) and entries outside the chosen state dict (key: why).
    skipped: dict[str, str] = field(default_factory=dict)
    #: The wrapper entry the state dict was taken from ("" when the file is a bare state dict).
    wrapper: str = ""


def read_checkpoint(path: str | os.PathLike[str]) -> RawCheckpoint:
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
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return _read_torch(p)
    # safetensors before the pickle magic: a header length whose low byte is 0x80 starts with b"\x80" too.
    if len(head) == 9:
        n = struct.unpack("<Q", head[:8])[0]
        if 2 <= n <= size - 8:
            first = head[8:9]
            if first == b"{":
                if n > MAX_HEADER_BYTES:
                    raise CheckpointError(
                        f"{p}: its safetensors header alone is {n / 2**20:.0f} MiB, the index of far more tensors "
                        f"than the {MAX_TENSORS:,} a coordinate-MLP checkpoint could have; refusing to read it"
                    )
                return _read_safetensors(p)
        elif p.suffix == ".safetensors" and head[:1] != b"\x80":
            raise CheckpointError(f"{p}: truncated or corrupt safetensors file (header says {n} bytes)")
    if head[:1] == b"\x80":
        return _read_torch(p)
    raise CheckpointError(f"{p}: not a safetensors file or a torch checkpoint (unrecognised content)")


def _read_safetensors(p: Path) -> RawCheckpoint:
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            metadata = _parse_metadata(p, meta)
            if metadata is not None:
                # Types, ranges and required fields are checked before any tensor is read.
                validate_metadata(metadata, p)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except InrdiagError:
        raise
    except Exception as exc:  # safetensors raises its own error types and OSError/ValueError
        raise CheckpointError(f"{p}: truncated or corrupt safetensors file ({_one_line(exc)})") from None
    if metadata is not None:
        check_declared_shapes(metadata, tensors, p)
    fmt = "safetensors (inrdiag metadata)" if metadata is not None else "safetensors"
    skipped = {f"__metadata__.{k}": "string metadata" for k in meta if k != METADATA_KEY}
    return RawCheckpoint(str(p), fmt, tensors, metadata, skipped)


def _zip_entries(p: Path) -> int | None:
    """Number of entries of a zip file from its end-of-central-directory record (O(1)); None if not a zip."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        f.seek(max(0, size - 65558))
        tail = f.read()
        i = tail.rfind(b"PK\x05\x06")
        if i < 0 or len(tail) < i + 22:
            return None
        n = struct.unpack("<H", tail[i + 10 : i + 12])[0]
        if n != 0xFFFF:
            return n
        j = tail.rfind(b"PK\x06\x07", 0, i)  # ZIP64 locator -> ZIP64 end record
        if j < 0:
            return None
        f.seek(struct.unpack("<Q", tail[j + 8 : j + 16])[0])
        rec = f.read(56)
        if rec[:4] != b"PK\x06\x06":
            return None
        return struct.unpack("<Q", rec[32:40])[0]


def _check_count(p: Path, n: int) -> None:
    if n > MAX_TENSORS:
        raise CheckpointError(
            f"{p} holds {n:,} tensors, more than the {MAX_TENSORS:,} a coordinate-MLP checkpoint could have; "
            "refusing to read them all (save the model's own state dict)"
        )


def _parse_metadata(p: Path, meta: dict[str, str]) -> dict[str, Any] | None:
    if METADATA_KEY not in meta:
        return None
    try:
        metadata = json.loads(meta[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{p}: metadata '{METADATA_KEY}' is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{p}: metadata '{METADATA_KEY}' must be a JSON object, got {type(metadata).__name__}")
    return metadata


def validate_metadata(meta: dict[str, Any], path: str | os.PathLike) -> None:
    """The schema of inrdiag's metadata, checked before anything is allocated.

    ``{"format": 1, "arch": ArchSpec fields, "provenance": object (optional),
    "cohort": {"heads": int >= 1, "shared_layers": int in 1..layers-1, "names": [str] (optional)}}``.
    Raises CheckpointError naming the field, the value and what is allowed.
    """
    fmt = meta.get("format")
    if fmt != FORMAT_VERSION or isinstance(fmt, bool):
        raise CheckpointError(f"{path}: inrdiag format {fmt!r} is not supported (this version reads {FORMAT_VERSION})")
    if "arch" not in meta:
        raise CheckpointError(f"{path}: inrdiag metadata lacks the required field 'arch'")
    try:
        spec = ArchSpec.from_dict(meta["arch"])
    except SpecError as exc:
        raise CheckpointError(f"{path}: metadata field arch: {exc}") from None
    prov = meta.get("provenance", {})
    if not isinstance(prov, dict):
        raise CheckpointError(
            f"{path}: metadata field provenance must be a JSON object, got {type(prov).__name__} {_short(prov)}"
        )
    check_memory(4.0 * spec.num_parameters, f"{path}: the declared architecture ({spec.num_parameters:,} parameters)",
                 "file (its metadata declares an implausible size)")  # fmt: skip
    cohort = meta.get("cohort")
    if cohort is None:
        return
    if not isinstance(cohort, dict):
        raise CheckpointError(f"{path}: metadata field cohort must be a JSON object, got {type(cohort).__name__}")
    for name in ("heads", "shared_layers"):
        if name not in cohort:
            raise CheckpointError(f"{path}: metadata field cohort lacks the required field '{name}'")
    heads, shared = cohort["heads"], cohort["shared_layers"]
    if isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= 100_000:
        raise CheckpointError(f"{path}: metadata field cohort.heads must be an integer in 1..100000, got {heads!r}")
    L = spec.num_linear
    if isinstance(shared, bool) or not isinstance(shared, int) or not 1 <= shared <= L - 1:
        raise CheckpointError(
            f"{path}: metadata field cohort.shared_layers must be an integer in 1..{L - 1} "
            f"(the network has {L} linear layers), got {shared!r}"
        )
    names = cohort.get("names", [])
    if names is None:
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) not in (0, heads):
        raise CheckpointError(
            f"{path}: metadata field cohort.names must be a list of {heads} strings (or empty), got {_short(names)}"
        )
    check_memory(4.0 * spec.num_parameters * heads, f"{path}: the declared cohort of {heads} heads",
                 "file (its metadata declares an implausible size)")  # fmt: skip


def expected_tensors(meta: dict[str, Any]) -> dict[str, list[int]]:
    """Key -> shape of every tensor an inrdiag file with (validated) metadata ``meta`` must hold."""
    shapes = ArchSpec.from_dict(meta["arch"]).state_shapes()
    cohort = meta.get("cohort")
    if not cohort:
        return shapes
    K = cohort["shared_layers"]
    out: dict[str, list[int]] = {}
    for key, shape in shapes.items():
        if is_encoder_key(key, K):
            out[key] = shape
        else:
            for d in range(cohort["heads"]):
                out[f"heads.{d}.{key}"] = shape
    return out


def check_declared_shapes(meta: dict[str, Any], tensors: dict[str, Any], path: str | os.PathLike) -> None:
    """Every tensor the metadata declares is in the file with its shape, and nothing else is."""
    want = expected_tensors(meta)
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: tensors do not match the stored architecture (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    for key, shape in want.items():
        if list(tensors[key].shape) != shape:
            raise CheckpointError(f"{path}: {key} has shape {list(tensors[key].shape)}, the architecture says {shape}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_torch(p: Path) -> RawCheckpoint:
    n_entries = _zip_entries(p)
    if n_entries is not None:
        _check_count(p, n_entries - 8)  # data.pkl, version, byteorder, ... besides one entry per storage
    try:
        # torch warns (multi-line) on some damaged files before raising; the error says it all.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{p}: not a plain state dict; refusing to unpickle arbitrary objects "
            f"(weights_only load failed: {_one_line(exc)[:160]})"
        ) from None
    except RecursionError:
        raise CheckpointError(f"{p}: nested too deeply to be a state dict") from None
    except MemoryError:
        raise CheckpointError(f"{p}: torch ran out of memory reading it (a damaged or huge file)") from None
    except Exception as exc:  # zip errors, EOF, bad magic: a damaged file
        raise CheckpointError(f"{p}: truncated or corrupt torch checkpoint ({_one_line(exc)[:160]})") from None
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{p} holds a single tensor, not a state dict")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state dict")
    flat, skipped = _flatten(obj, p)
    tensors, wrapper, outside = _unwrap(flat)
    skipped.update(outside)
    return RawCheckpoint(str(p), "torch (weights_only)", tensors, None, skipped, wrapper)


#: Nesting deeper than this is not a state dict (Lightning + optimizer state is < 10 levels).
MAX_DEPTH = 32


def _flatten(obj: Any, p: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Flat ``{dotted key: tensor}`` and ``{dotted key: type}`` of what is not a tensor (iterative)."""
    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        node, prefix, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{p}: nested more than {MAX_DEPTH} levels deep; not a state dict")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        children = []
        for k, v in items:
            key = f"{prefix}{k}"
            if isinstance(v, torch.Tensor):
                out[key] = v
            elif isinstance(v, (dict, list, tuple)) and len(v) > 0:
                children.append((v, key + ".", depth + 1))
            else:
                skipped[key] = type(v).__name__
        stack.extend(reversed(children))
    return out, skipped


def _unwrap(flat: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, str]]:
    """Descend into wrapper entries (``state_dict``, ``model_state``, ...) while there is one.

    Tensors outside the chosen entry (optimizer state, EMA copies, ...) are returned as skipped,
    with the reason, so ``inrdiag info`` can list them. Entries are marked "outside" only when the
    loader really descends (a top-level ``model.`` that is just a module name marks nothing).
    """
    wrapper = ""
    outside: dict[str, str] = {}
    while True:
        tops = {k.split(".", 1)[0] for k in flat}
        pick = next((w for w in WRAPPER_KEYS if w in tops), None)
        if pick is None or not any("." in k for k in flat if k.startswith(pick + ".")):
            return flat, wrapper, outside
        inner = {k[len(pick) + 1 :]: v for k, v in flat.items() if k.startswith(pick + ".")}
        # Only descend into a wrapper that holds 2-D weights; else the file is a bare state dict
        # whose module happens to be called e.g. 'model'.
        if not any(getattr(v, "ndim", 0) == 2 for v in inner.values()):
            return flat, wrapper, outside
        if len(tops) > 1 and pick in ("model", "net", "network", "module") and _looks_flat(flat, pick):
            return flat, wrapper, outside
        for k in flat:
            if not k.startswith(pick + "."):
                outside[(wrapper + "." if wrapper else "") + k] = f"outside '{pick}'"
        wrapper = (wrapper + "." if wrapper else "") + pick
        flat = inner


def _looks_flat(flat: dict[str, Any], pick: str) -> bool:
    """True when other top-level entries also hold 2-D weights: 'model.' is then a module name."""
    return any(getattr(v, "ndim", 0) == 2 for k, v in flat.items() if not k.startswith(pick + "."))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
