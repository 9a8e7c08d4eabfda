"""lucidrains/siren-pytorch: ``SirenNet`` is ``net.{i}`` (<= 0.0.9) or ``layers.{i}`` (>= 0.1.0) of ``Siren``
modules, then ``last_layer``; ``SirenWrapper`` adds the prefix ``net.`` and a ``grid`` buffer.
(A ``modulator.*`` (``latent_dim``) is refused as a second layer sequence.)"""

from __future__ import annotations

from collections.abc import Callable

from .codebases import SRC_SP
from .entry import Chain, Layout
from .keys import parts


def _sirennet(container: str) -> Callable[[Chain], bool]:
    def matches(chain: Chain) -> bool:
        tails = [parts(f) for f in chain.full]
        body = tails[:-1]
        sp_body = bool(body) and all(len(t) >= 2 and t[-2] in ("net", "layers") and t[-1].isdigit() for t in body)
        return (sp_body and tails[-1][-1] == "last_layer" and len({t[-2] for t in body}) == 1
                and body[0][-2] == container)  # fmt: skip

    return matches


def _grid(chain: Chain) -> dict[str, str]:
    last = parts(chain.full[-1])
    if len(last) >= 2 and last[-2] == "net" and "grid" in chain.tensors:
        return {"grid": f"SirenWrapper's coordinate grid buffer (not a layer), {SRC_SP}"}
    return {}


_OUT_WHY = ("SirenNet's final_activation is not stored in the state dict (a sine before 0.0.6; "
            "nn.Identity() by default from 0.0.6; the README's example uses nn.Sigmoid())")  # fmt: skip
_SINE = ("sine", f"layout rule: siren-pytorch Siren layers are sin(w0 h), {SRC_SP}")

V0_1 = Layout(
    name="siren-pytorch-0.1",
    label="siren-pytorch >= 0.1.0 (layers.{i} + last_layer)",
    codebase="lucidrains/siren-pytorch >= 0.1.0 SirenNet / SirenWrapper (0.1.0, 0.1.7 read)",
    checked=(SRC_SP,),
    matches=_sirennet("layers"),
    fixed={"activation": _SINE},
    why={"out_activation": _OUT_WHY},
    w0=lambda act: (
        30.0,
        1.0,
        f"layout rule: siren-pytorch >= 0.1.0 (layers.{{i}}) SirenNet(w0_initial=30, w0=1), {SRC_SP}",
    ),
    roles=_grid,
)

V0_0 = Layout(
    name="siren-pytorch-0.0",
    label="siren-pytorch <= 0.0.9 (net.{i} + last_layer)",
    codebase="lucidrains/siren-pytorch <= 0.0.9 SirenNet / SirenWrapper (PyPI sdists 0.0.1-0.0.9 read)",
    checked=(SRC_SP,),
    matches=_sirennet("net"),
    fixed={"activation": _SINE,
           "w0": (30.0, f"layout rule: siren-pytorch SirenNet(w0_initial=30) in every version, {SRC_SP}")},
    why={"out_activation": _OUT_WHY,
         "w0_hidden": ("siren-pytorch <= 0.0.9 (net.{i}) defaults the hidden w0 to 30 in 0.0.4 and 0.0.6-0.0.8, "
                       "to 1 in 0.0.1-0.0.3, 0.0.5 and 0.0.9")},
    roles=_grid,
)  # fmt: skip
