"""The linear chain's structure: one sequence, no gaps, shapes that chain, batch norm, dtypes, and every
unused tensor that could change the function explained. Each check refuses with the likely cause."""

from __future__ import annotations

import torch

from ...errors import CheckpointError
from ...models.spec import NORM_TENSORS, norm_key
from .keys import group, path_key
from .options import MODEL_CODE
from .records import TensorInfo, info

#: Floating dtypes loaded as they are (float16/bfloat16 are converted to float32, and said).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def structure_hint(paths: list[str], tensors: dict[str, torch.Tensor]) -> str:
    """The likely reason a set of layers is not one chain (for the error message)."""
    keys = " ".join(tensors)
    if "modulator" in keys:
        return "a modulator (e.g. siren-pytorch SirenWrapper(latent_dim=...)) multiplies the hidden layers"
    if "filters" in keys:
        return "multiplicative filters (BACON / MFN-style: layers multiplied by filter outputs)"
    return ""


def check_one_chain(paths: list[str], tensors: dict[str, torch.Tensor], path: str) -> None:
    """The layers must form one numbered sequence (plus an optional named head): several sequences
    are several networks (nerfstudio's mlp_base + mlp_head) or a structure that is not a chain."""
    groups = sorted({group(p)[0] for p in paths if group(p)[1] is not None})
    if len(groups) > 1:
        hint = structure_hint(paths, tensors)
        raise CheckpointError(
            f"{path}: the 2-D weights form {len(groups)} separate layer sequences ({', '.join(g + '.*' for g in groups[:4])})"
            f"{'; likely ' + hint if hint else ' (several networks, or a structure that is not one chain)'}; "
            f"inrdiag rebuilds only a single chain of linear layers: pass {MODEL_CODE}"
        )


def check_gaps(paths: list[str], tensors: dict[str, torch.Tensor], used: set[str], contiguous: bool, path: str) -> None:
    """A numbered chain with a missing member is an error, never a shorter network.

    Module lists of layers (``linears.{k}``, ``net.{i}.linear``, ...) must number 0, 1, 2, ...;
    ``nn.Sequential`` interleaves weight-free modules (activations), so there the number of free
    indices between two linear layers must be the same everywhere (and at most 2); indices held by
    used modules (batch norm, an encoding) do not count as free.
    """
    byg: dict[str, list[int]] = {}
    for p in paths:
        g, i = group(p)
        if i is not None:
            byg.setdefault(g, []).append(i)
    for g, found in byg.items():
        idx = sorted(found)
        pre = g + "." if g else ""
        held = set()
        for k in used:
            if k.startswith(pre):
                head = k[len(pre) :].split(".", 1)[0]
                if head.isdigit():
                    held.add(int(head))
        lead = [i for i in range(idx[0]) if i not in held]
        gaps = [len([i for i in range(a + 1, b) if i not in held]) for a, b in zip(idx, idx[1:])]
        bad = bool(lead) or (contiguous and any(gaps)) or len(set(gaps)) > 1 or any(n > 2 for n in gaps)
        if bad:
            missing = sorted(set(range(idx[-1])) - set(idx) - held)
            present = [k for k in tensors if any(k.startswith(f"{pre}{m}.") for m in missing)]
            detail = f" ({present[0]} has shape {list(tensors[present[0]].shape)})" if present else ""
            raise CheckpointError(
                f"{path}: the numbered layers {pre}{{i}} skip {', '.join(f'{pre}{m}' for m in missing[:6])}{detail}; "
                "a missing or damaged middle layer is not a shorter network"
            )


def check_chain(paths: list[str], weights: list[torch.Tensor], path: str, tensors: dict[str, torch.Tensor]) -> None:
    """Each weight (out_k, in_k) feeds the next: out_k == in_{k+1}; else the likely cause is named."""
    in0 = int(weights[0].shape[1])
    for i in range(len(weights) - 1):
        out_i, in_n = weights[i].shape[0], weights[i + 1].shape[1]
        if out_i == in_n:
            continue
        extra = in_n - out_i
        hint = structure_hint(paths, tensors)
        if not hint and (extra == in0 or 1 <= extra <= 4):
            what = "the first layer's input (the encoded coordinates)" if extra == in0 else "raw coordinates"
            hint = (f"a skip connection: {paths[i + 1]} takes {extra} more inputs, the width of {what} "
                    "(NeRF / nerfstudio MLP(skip_connections=...) concatenate the input again)")  # fmt: skip
        raise CheckpointError(
            f"{path}: shapes do not chain: {paths[i]}.weight {list(weights[i].shape)} then {paths[i + 1]}.weight "
            f"{list(weights[i + 1].shape)} (out {out_i} != in {in_n})"
            f"{'; likely ' + hint if hint else ''}; inrdiag rebuilds only a plain chain: pass {MODEL_CODE}"
        )


def check_accounted(
    tensors: dict[str, torch.Tensor], infos: dict[str, TensorInfo], roles: dict[str, str], paths: list[str], path: str
) -> None:
    """Every unused tensor that could change the function is explained, or the load is refused:
    2-D/3-D tensors (a layer, an embedding, a matrix), and any tensor inside a chain layer's module
    (a learnable w0, a scale)."""
    modules = {p.rsplit(".", 1)[0] + "." for p in paths if "." in p}
    modules |= {p + "." for p in paths}
    bad = []
    for k, tinfo in infos.items():
        if tinfo.used or k in roles:
            continue
        t = tensors[k]
        inside = any(k.startswith(m) for m in modules)
        if t.ndim >= 2 or inside:
            bad.append(f"{k} {list(t.shape)}")
    if bad:
        raise CheckpointError(
            f"{path}: tensors {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''} are not part of the linear chain "
            f"and inrdiag cannot tell what they compute; pass {MODEL_CODE}"
        )


def find_batchnorm(
    tensors: dict[str, torch.Tensor],
    paths: list[str],
    state: dict[str, torch.Tensor],
    infos: dict[str, TensorInfo],
    path: str,
) -> list[int]:
    """Batch-norm modules (1-D weight/bias + running stats, each (width,)) placed after the linear sorting
    before them: their tensors go into ``state`` as ``norms.{k}.*``; returns those k."""
    bn_paths = sorted({k[: -len(".running_mean")] for k in tensors if k.endswith(".running_mean")}, key=path_key)
    layers: list[int] = []
    for q in bn_paths:
        before = [k for k, p in enumerate(paths) if path_key(p) < path_key(q)]
        if not before:
            raise CheckpointError(f"{path}: batch norm '{q}' comes before the first linear layer; not supported")
        k = before[-1]
        if k == len(paths) - 1:
            raise CheckpointError(f"{path}: batch norm '{q}' after the output layer is not supported ({MODEL_CODE})")
        width = tensors[paths[k] + ".weight"].shape[0]
        for name in NORM_TENSORS:
            key = f"{q}.{name}"
            if key not in tensors:
                if name == "num_batches_tracked":
                    continue
                raise CheckpointError(
                    f"{path}: batch norm '{q}' lacks '{name}' (affine batch norm with running stats expected)"
                )
            t = tensors[key]
            if name != "num_batches_tracked" and list(t.shape) != [width]:
                raise CheckpointError(f"{path}: {key} has shape {list(t.shape)}, expected [{width}] after {paths[k]}")
            state[f"{norm_key(k)}.{name}"] = t
            infos[key] = info(key, t, True, f"batch norm after linear {k}")
        layers.append(k)
    return layers


def dtype_policy(state: dict[str, torch.Tensor], path: str) -> list[str]:
    """Floating weights only: float16/bfloat16 converted (and said); complex, integer, bool, float8 refused."""
    notes = []
    halves = []
    for k, t in state.items():
        dt = str(t.dtype).replace("torch.", "")
        if k.endswith("num_batches_tracked"):
            continue
        if t.is_complex():
            raise CheckpointError(
                f"{path}: {k} is {dt}: complex weights (e.g. WIRE's complex Gabor layers) have no real "
                f"counterpart in inrdiag's MLP and are never cast to real; pass {MODEL_CODE}"
            )
        if dt not in FLOAT_DTYPES:
            why = ("float8 weights are quantized (their scales live outside the tensor)" if "float8" in dt
                   else "integer/bool tensors are not trained weights")  # fmt: skip
            raise CheckpointError(f"{path}: {k} is {dt}; {why}. inrdiag loads float16/bfloat16/float32/float64 weights")
        if dt in ("float16", "bfloat16"):
            halves.append(dt)
    if halves:
        notes.append(f"{', '.join(sorted(set(halves)))} weights converted to float32 (computations in float32)")
    return notes
