"""vsitzmann/siren: the official code's ``net.net.{i}.0``, and the ``net.{i}.linear`` keys that the SIREN
notebook, FINER and WIRE all write (so those keys decide only what all of them do alike)."""

from __future__ import annotations

from .codebases import SRC_FINER, SRC_NOTEBOOK, SRC_SIREN, SRC_WIRE
from .entry import Chain, Layout
from .keys import numbered, parts


def _official(chain: Chain) -> bool:
    # SingleBVPNet / PINNet hold FCBlock(outermost_linear=True) as .net, whose .net is a MetaSequential
    # of MetaSequential(BatchLinear, nl): keys net.net.{i}.0.
    return numbered(chain.full, None, ("0",)) and all(parts(f)[-4:-2] == ["net", "net"] for f in chain.full)


OFFICIAL = Layout(
    name="siren-official",
    label="siren-official (net.net.{i}.0)",
    codebase="vsitzmann/siren (SingleBVPNet, PINNet: FCBlock)",
    checked=(SRC_SIREN,),
    matches=_official,
    fixed={"out_activation": ("none", f"layout rule: SingleBVPNet/PINNet build FCBlock(outermost_linear=True), {SRC_SIREN}"),
           "pe_convention": ("nerf-siren", f"layout rule: mode='nerf' is PosEncodingNeRF, {SRC_SIREN}")},  # noqa: E501
    why={"activation": f"FCBlock writes these keys for all 7 of its nonlinearities (sine|relu|sigmoid|tanh|selu|softplus|elu; {SRC_SIREN})"},  # noqa: E501
    w0=lambda act: (30.0, 30.0, f"layout rule: Sine.forward is sin(30 x) in every layer, {SRC_SIREN}"),
)  # fmt: skip


def net_linear(chain: Chain) -> bool:
    """``net.{i}.linear`` (SineLayer-style modules holding ``.linear``), then ``net.{L}`` or ``net.{L}.linear``."""
    body, last = chain.full[:-1], chain.full[-1]
    return (
        bool(body)
        and numbered(body, None, ("linear",))
        and (numbered([last], None, ()) or numbered([last], None, ("linear",)))
    )


def linear_last(chain: Chain) -> bool:
    """The last layer is a SineLayer-style module too (``net.{L}.linear``): ``outermost_linear=False``."""
    return chain.full[-1].endswith(".linear")


_SHARED_NET_LINEAR = f"written by the SIREN notebook ({SRC_NOTEBOOK}), FINER's Siren/Finer/Gauss ({SRC_FINER}) and WIRE's siren/gauss/relu/wire INRs ({SRC_WIRE})"  # noqa: E501


def _w0_siren_family(act: str) -> tuple[float, float, str] | str:
    if act in ("sine", "finer"):
        return 30.0, 30.0, (f"layout rule: first_omega_0 = hidden_omega_0 = 30 by default in every codebase "
                            f"writing net.{{i}}.linear ({SRC_NOTEBOOK}, {SRC_FINER}, {SRC_WIRE})")  # fmt: skip
    return f"its Gauss scale defaults differ (FINER Gauss: 30, {SRC_FINER}; WIRE gauss: 10, {SRC_WIRE})"


NET_LINEAR = Layout(
    name="net-linear",
    label="net.{i}.linear (SIREN notebook / FINER / WIRE)",
    codebase="SIREN notebook Siren(outermost_linear=True), FINER Siren/Finer/Gauss, WIRE INR",
    checked=(SRC_NOTEBOOK, SRC_FINER, SRC_WIRE),
    matches=lambda chain: net_linear(chain) and not linear_last(chain),
    fixed={
        "out_activation": (
            "none",
            f"layout rule: a plain last layer net.{{L}} is outermost_linear=True (nn.Linear), "
            f"{SRC_NOTEBOOK}, {SRC_FINER}, {SRC_WIRE}",
        )
    },
    why={"activation": _SHARED_NET_LINEAR},
    w0=_w0_siren_family,
)

NET_LINEAR_HIDDEN_OUT = Layout(
    name="net-linear-hidden-out",
    label="net.{i}.linear (SIREN notebook / FINER / WIRE)",
    codebase="SIREN notebook Siren(outermost_linear=False), WIRE INR(outermost_linear=False)",
    checked=(SRC_NOTEBOOK, SRC_WIRE),
    matches=lambda chain: net_linear(chain) and linear_last(chain),
    fixed={
        "out_activation": (
            "same as hidden",
            f"layout rule: a last SineLayer-style module net.{{L}}.linear is "
            f"outermost_linear=False (the hidden layers' class, hidden_omega_0), {SRC_NOTEBOOK}, {SRC_WIRE}",
        )
    },
    why={"activation": _SHARED_NET_LINEAR},
    w0=_w0_siren_family,
)
