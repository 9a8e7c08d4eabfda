"""The coordinate encoding before the first layer: a stored Fourier matrix found by its name, or a
positional encoding in one codebase's convention (``models.spec.PE_CONVENTIONS``), solved from the
first layer's width ``in0`` and the flags."""

from __future__ import annotations

from typing import Any

import torch

from ...errors import AmbiguousArchitectureError
from ...models.spec import FOURIER_B, PE_CONVENTIONS
from .codebases import SRC_ALPINE_FFN, SRC_NS_ENC
from .entry import Layout
from .options import MODEL_CODE, LoadOptions
from .records import TensorInfo, info

#: Names of a stored Fourier matrix B whose codebase's formula is known: (m, d) used as x B^T
#: (Tancik's notebooks, alpine's FFN ``PosEncoding.B``); nerfstudio ``RFFEncoding.b_matrix`` is (d, m).
FOURIER_NAMES = {"B": "tancik", "B_gauss": "tancik", "b_matrix": "nerfstudio"}

#: A Fourier matrix that fits the first layer: (key, convention, m, d, include_input).
Fit = tuple[str, str, int, int, bool]


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` hold the same values (the same storage, or equal entries) with the same shape and dtype."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return bool(torch.equal(a, b))


def fourier_candidates(
    tensors: dict[str, torch.Tensor], paths: list[str], in0: int, roles: dict[str, str]
) -> list[Fit]:
    """Stored Fourier matrices that fit the first layer (``in0`` inputs): (key, convention, m, d, include_input).

    The same tensor registered under two names (alpine's FFN keeps its encoding as ``pos_encode``
    and as ``model.0``) is one matrix: the second name is recorded as a duplicate in ``roles``.
    """
    used = {p + ".weight" for p in paths}
    fits: list[Fit] = []
    for k, t in tensors.items():
        name = k.split(".")[-1]
        if k in used or t.ndim != 2 or name not in FOURIER_NAMES:
            continue
        conv = FOURIER_NAMES[name]
        m, dd = (int(t.shape[1]), int(t.shape[0])) if conv == "nerfstudio" else (int(t.shape[0]), int(t.shape[1]))
        if not 1 <= dd <= 4:
            continue
        if 2 * m == in0:
            inc = False
        elif conv == "nerfstudio" and 2 * m + dd == in0:
            inc = True
        else:
            continue
        twin = next((f[0] for f in fits if same_tensor(tensors[f[0]], t)), None)
        if twin is not None:
            roles[k] = f"the same Fourier matrix as {twin} (one tensor under two names)"
            continue
        fits.append((k, conv, m, dd, inc))
    return fits


def infer_encoding(
    tensors: dict[str, torch.Tensor],
    paths: list[str],
    in0: int,
    opts: LoadOptions,
    layout: Layout,
    state: dict[str, torch.Tensor],
    infos: dict[str, TensorInfo],
    sources: dict[str, str],
    roles: dict[str, str],
    path: str,
) -> tuple[dict[str, Any], int]:
    """Return (encoding fields of ArchSpec, coordinate dimension d); a Fourier matrix goes into ``state``
    as ``encoding.B`` (m, d)."""
    fits = fourier_candidates(tensors, paths, in0, roles)
    fixed = layout.fixed
    if opts.encoding is not None:
        enc, sources["encoding"] = opts.encoding, "flag --encoding"
    elif "encoding" in fixed:
        enc, sources["encoding"] = fixed["encoding"][0], fixed["encoding"][1]
    elif len(fits) > 1:
        raise AmbiguousArchitectureError(
            f"{path}: several different Fourier matrices fit the first layer ({[f[0] for f in fits]}); "
            f"inrdiag cannot tell which one the model uses: pass {MODEL_CODE}"
        )
    elif fits:
        enc, sources["encoding"] = "fourier", f"found Fourier matrix {fits[0][0]}"
    else:
        enc, sources["encoding"] = "none", "shapes (the first layer takes raw coordinates)"
    if enc == "fourier":
        if not fits:
            raise AmbiguousArchitectureError(
                f"{path}: --encoding fourier needs the matrix B in the file: a 2-D tensor named B or B_gauss "
                f"(m x d, 2m = {in0} inputs of the first layer) or nerfstudio's b_matrix (d x m, 2m or 2m + d "
                f"= {in0}); none found"
            )
        key, conv, m, dd, inc = fits[0]
        B = tensors[key].T if conv == "nerfstudio" else tensors[key]
        state[FOURIER_B] = B.contiguous()
        role = "Fourier matrix B" + (" (nerfstudio RFFEncoding.b_matrix, stored d x m)" if conv == "nerfstudio" else "")
        infos[key] = info(key, tensors[key], True, role)
        rule = (f"layout rule: the name b_matrix is nerfstudio's RFFEncoding: 2 pi x b_matrix, [sin(s), sin(s + pi/2)]"
                f"{', then x (include_input: the first layer takes 2m + d inputs)' if inc else ''}, {SRC_NS_ENC}"
                if conv == "nerfstudio" else
                f"layout rule: a matrix named {key.split('.')[-1]} (m x d) is Tancik's [sin(2 pi x B^T), cos(2 pi x B^T)]"
                f" ({SRC_ALPINE_FFN} PosEncoding, tancik/fourier-feature-networks)")  # fmt: skip
        sources["ff_convention"] = rule
        return {"encoding": "fourier", "fourier_features": m, "ff_convention": conv, "ff_include_input": inc}, dd
    if enc == "positional":
        return positional(in0, opts, layout, sources, path)
    if in0 > 4:
        raise AmbiguousArchitectureError(
            f"{path}: first layer takes {in0} inputs, too many for raw coordinates and no Fourier matrix is stored; "
            f"pass --encoding positional --frequencies L --pe-convention {'|'.join(PE_CONVENTIONS)}, or {MODEL_CODE}"
        )
    return {"encoding": "none"}, in0


def positional(
    in0: int, opts: LoadOptions, layout: Layout, sources: dict[str, str], path: str
) -> tuple[dict[str, Any], int]:
    """The positional encoding's ArchSpec fields and d: the convention from the flag or the layout, L from
    the flag (or the width, when the layout fixes d), whether x is included from the width ``in0``."""
    fixed = layout.fixed
    if opts.pe_convention is not None:
        conv, sources["pe_convention"] = opts.pe_convention, "flag --pe-convention"
    elif "pe_convention" in fixed:
        conv, sources["pe_convention"] = fixed["pe_convention"]
    else:
        raise AmbiguousArchitectureError(
            f"{path}: several positional-encoding conventions fit (they differ in pi, order and where x goes): "
            f"pass --pe-convention nerf-siren (SIREN/WIRE PosEncodingNeRF) | finer (FINER PEMLP) | "
            f"nerfstudio (NeRFEncoding) | inrdiag"
        )
    kw: dict[str, Any] = {"encoding": "positional", "pe_convention": conv}
    if conv == "nerfstudio":
        if opts.pe_min_exp is None or opts.pe_max_exp is None:
            raise AmbiguousArchitectureError(
                f"{path}: nerfstudio's NeRFEncoding has no default frequency range: pass --pe-min-exp and "
                "--pe-max-exp (its min_freq_exp and max_freq_exp; vanilla NeRF: 0 and 8 with --frequencies 10)"
            )
        kw["pe_min_exp"], kw["pe_max_exp"] = float(opts.pe_min_exp), float(opts.pe_max_exp)
        sources["pe_range"] = "flags --pe-min-exp --pe-max-exp"
    forced_x = conv in ("nerf-siren", "finer")
    L = opts.frequencies
    if L is None:
        d = layout.in_features
        if forced_x and d is not None and in0 % d == 0 and (in0 // d - 1) % 2 == 0 and in0 // d > 1:
            L = (in0 // d - 1) // 2
            sources["frequencies"] = f"shapes ({in0} = d (2L + 1) with d = {d} fixed by the layout)"
        else:
            raise AmbiguousArchitectureError(f"{path}: --encoding positional needs --frequencies L")
    else:
        sources["frequencies"] = "flag --frequencies"
    options = [True] if forced_x else [True, False]
    sols = [(inc, in0 // (2 * L + int(inc))) for inc in options if in0 % (2 * L + int(inc)) == 0]
    sols = [(inc, d) for inc, d in sols if 1 <= d <= 4 and (layout.in_features is None or d == layout.in_features)]
    if not sols:
        raise AmbiguousArchitectureError(
            f"{path}: first layer takes {in0} inputs, which is not d*(2L+1){'' if forced_x else ' or d*2L'} "
            f"(d <= 4) for --frequencies {L}; check --frequencies"
        )
    if len(sols) > 1:
        raise AmbiguousArchitectureError(
            f"{path}: {in0} inputs fit both d={sols[0][1]} with x included and d={sols[1][1]} without; "
            f"inrdiag cannot tell: pass {MODEL_CODE}"
        )
    inc, d = sols[0]
    sources["include_input"] = ("layout rule: the convention always includes x" if forced_x
                                else "shapes (the only width that fits)")  # fmt: skip
    kw.update(frequencies=L, include_input=inc)
    return kw, d
