"""The properties no shape shows: hidden activation, w0 of the first and the hidden layers, output
activation. Each comes from a flag or the layout's rule; what neither decides is one refusal naming
every flag still needed. Flags on inrdiag's own files override their metadata (``apply_overrides``)."""

from __future__ import annotations

from typing import Any

from ...errors import AmbiguousArchitectureError, SpecError
from ...models.spec import ACTIVATIONS, OUT_ACTIVATIONS, USES_W0, ArchSpec
from .entry import Layout
from .options import MODEL_CODE, LoadOptions, flag


def properties(layout: Layout, opts: LoadOptions, path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(activation, out_activation, w0, w0_hidden as ArchSpec fields; their sources), each from a flag or the
    layout's rule; what neither decides is collected into one AmbiguousArchitectureError naming every flag."""
    src: dict[str, str] = {}
    need: list[str] = []
    fixed = layout.fixed

    def pick(name: str, flag_value: str | None, choices: str) -> Any:
        if flag_value is not None:
            src[name] = f"flag {flag(name)}"
            return flag_value
        if name in fixed:
            src[name] = fixed[name][1]
            return fixed[name][0]
        need.append(f"{layout.why.get(name, 'not stored in the file')} -> pass {flag(name)} {choices}")
        return None

    act = pick("activation", opts.activation, "|".join(ACTIVATIONS))
    out = pick("out_activation", opts.out_activation, "|".join(OUT_ACTIVATIONS))
    if out == "same as hidden":
        out = act
    w0 = w0_hidden = 30.0
    if act in USES_W0 or out in USES_W0:
        rule = layout.w0(act) if layout.w0 is not None else None
        for name, flag_value in (
            ("w0", opts.w0),
            ("w0_hidden", opts.w0_hidden if opts.w0_hidden is not None else opts.w0),
        ):
            if flag_value is not None:
                val = float(flag_value)
                src[name] = "flag --w0-hidden" if name == "w0_hidden" and opts.w0_hidden is not None else "flag --w0"
            elif name in fixed:
                val, src[name] = fixed[name]
            elif isinstance(rule, tuple):
                val = rule[0] if name == "w0" else rule[1]
                src[name] = rule[2]
            else:
                why = (
                    rule
                    if isinstance(rule, str)
                    else layout.why.get(name, f"the file does not store the frequency of {act}")
                )
                fl = "--w0" if name == "w0" else "--w0-hidden"
                if not any(fl in n for n in need) and not (name == "w0_hidden" and any("--w0 " in n for n in need)):
                    need.append(
                        f"{why} -> pass {fl}" + (" (the Gauss scale)" if act == "gauss" else " (official SIREN: 30)")
                    )
                val = 30.0
            if name == "w0":
                w0 = val
            else:
                w0_hidden = val
    else:
        src["w0"] = src["w0_hidden"] = "unused by this activation"
    if need:
        raise AmbiguousArchitectureError(
            f"{path}: layout '{layout.label}' does not decide everything: "
            + "; ".join(need)
            + f"; or use your own model class with {MODEL_CODE}"
        )
    return {"activation": act, "out_activation": out, "w0": w0, "w0_hidden": w0_hidden}, src


def apply_overrides(spec: ArchSpec, opts: LoadOptions, sources: dict[str, str]) -> None:
    """Flags on an inrdiag file: they override its metadata (and the sources say so)."""
    for name in ("activation", "out_activation"):
        v = getattr(opts, name)
        if v is not None:
            setattr(spec, name, v)
            sources[name] = f"flag {flag(name)}"
    if opts.w0 is not None:
        spec.w0 = spec.w0_hidden = float(opts.w0)
        sources["w0"] = sources["w0_hidden"] = "flag --w0"
    if opts.w0_hidden is not None:
        spec.w0_hidden = float(opts.w0_hidden)
        sources["w0_hidden"] = "flag --w0-hidden"
    if opts.encoding is not None and opts.encoding != spec.encoding:
        raise SpecError(f"--encoding {opts.encoding} contradicts the file's stored encoding '{spec.encoding}'")
    if opts.pe_convention is not None and (spec.encoding != "positional" or opts.pe_convention != spec.pe_convention):
        raise SpecError(f"--pe-convention {opts.pe_convention} contradicts the file's stored encoding")
    if opts.frequencies is not None and opts.frequencies != spec.frequencies:
        raise SpecError(f"--frequencies {opts.frequencies} contradicts the file's stored {spec.frequencies}")
    spec.validate()
