"""Inlet schemes: how a coordinate MLP is built and initialised before fitting (a registry).

A scheme does two things: ``arch(base)`` turns a plain ReLU architecture (depth x width) into the
one the scheme needs (SIREN: sine activations; ``pe``/``ff``: an encoding; ``bn``: batch norm after
the inlet), and ``init(model, generator)`` sets the weights. Every scheme starts from torch's
default ``nn.Linear`` init (drawn from ``generator``) and changes only what the scheme names.

Schemes (DESIGN.md section 4):

- ``default``: torch's ``nn.Linear`` init, ReLU, no encoding.
- ``rank-expand``: the inlet paper's rank-expanding init of the first layer (``rank_expand_points``,
  ``rank_expand_inlet``); later layers keep torch's init.
- ``siren``: the official SIREN code: sine activations with w0 = 30 in every layer, first layer
  ``U(-1/n_in, 1/n_in)``, hidden and output layers ``U(-sqrt(6/n_in)/w0, sqrt(6/n_in)/w0)``,
  biases keep torch's default ``U(-1/sqrt(n_in), 1/sqrt(n_in))``.
- ``siren-audio``: SIREN's audio recipe (``explore_siren.ipynb``): as ``siren`` but first-layer w0 = 3000.
- ``pe``: NeRF positional encoding (L = 6 frequencies ``2^k pi``, with x) + torch's init.
- ``ff``: Gaussian Fourier features (m = 256 rows of B ~ N(0, 5^2), stored in the checkpoint)
  + torch's init. sigma 5 on [-1,1] is Tancik et al.'s sigma 10 on [0,1].
- ``bn``: batch norm after the inlet layer (before its ReLU) + torch's init; train mode while
  fitting, eval mode for diagnostics.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from ..errors import InrdiagError
from ..grid import check_memory
from ..seeds import check_seed
from .mlp import CoordMLP, FourierEncoding
from .spec import ArchSpec

#: eps of the rank-expanding init: bias b_i = -||V_i|| + eps (DESIGN.md section 4).
RANK_EXPAND_EPS = 0.01
#: Activations with a ReLU-like threshold at h = 0, where rank-expand's geometry applies.
THRESHOLD_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "softplus")
SIREN_W0 = 30.0
#: First-layer w0 of SIREN's audio recipe (``siren-audio``; docs/signals.md).
SIREN_AUDIO_W0 = 3000.0
PE_FREQUENCIES = 6
FF_FEATURES = 256
FF_SIGMA = 5.0


class InitError(InrdiagError):
    """An unknown scheme, or a scheme that does not apply to the given architecture."""


class Init(Protocol):
    """Set (some of) a CoordMLP's weights in place, drawing from ``generator`` (None: torch's global RNG)."""

    def __call__(self, model: CoordMLP, generator: torch.Generator | None = None) -> None: ...


class ArchRule(Protocol):
    """The architecture a scheme needs, from a plain one (a new ArchSpec; the argument is not changed)."""

    def __call__(self, spec: ArchSpec) -> ArchSpec: ...


@dataclass(frozen=True)
class Scheme:
    """One inlet scheme of the registry ``SCHEMES``."""

    name: str
    summary: str
    arch: ArchRule
    #: Initialise the whole model (after torch's default init has been drawn).
    init: Init
    #: Re-initialise only the inlet (linear layer 0) of an existing model; None: not possible.
    reinit_inlet: Init | None


def _same(spec: ArchSpec) -> ArchSpec:
    return replace(spec, batchnorm=list(spec.batchnorm), hidden=list(spec.hidden))


def _noop(model: CoordMLP, generator: torch.Generator | None = None) -> None:
    return None


# ---------------------------------------------------------------- default
def default_inlet(model: CoordMLP, generator: torch.Generator | None = None) -> None:
    """torch's ``nn.Linear`` init of layer 0: kaiming_uniform(a=sqrt 5) = U(-1/sqrt(n_in), 1/sqrt(n_in))
    for the weight, the same bound for the bias."""
    lin = model.linear(0)
    bound = 1.0 / math.sqrt(lin.in_features)
    with torch.no_grad():
        lin.weight.uniform_(-bound, bound, generator=generator)
        if lin.bias is not None:
            lin.bias.uniform_(-bound, bound, generator=generator)


# ---------------------------------------------------------------- rank-expand
def rank_expand_points(n: int, d: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """n points V_i spread over [-1, 1]^d (n x d, float64 by default).

    When n = p^d this is exactly the p x ... x p grid ``linspace(-1, 1, p)`` per axis ('ij' order),
    as in the inlet paper. Otherwise (inrdiag's generalisation): the largest grid p^d <= n, then
    the remaining n - p^d points from a scrambled Sobol sequence (seed 0, so the scheme stays
    deterministic) mapped to [-1, 1]^d: a low-discrepancy set with the same spread as the grid.
    """
    dtype = dtype or torch.float64
    if n < 1 or d < 1:
        raise InitError(f"rank-expand needs width >= 1 and input dimension >= 1, got {n} and {d}")
    p = max(1, int(round(n ** (1.0 / d))))
    while p**d > n:
        p -= 1
    while (p + 1) ** d <= n:
        p += 1
    axis = torch.linspace(-1.0, 1.0, p, dtype=dtype) if p > 1 else torch.zeros(1, dtype=dtype)
    mesh = torch.meshgrid(*([axis] * d), indexing="ij")
    grid = torch.stack([m.reshape(-1) for m in mesh], dim=-1)
    rest = n - grid.shape[0]
    if rest == 0:
        return grid
    sobol = torch.quasirandom.SobolEngine(d, scramble=True, seed=0).draw(rest, dtype=torch.float64)
    return torch.cat([grid, (2.0 * sobol - 1.0).to(dtype)], dim=0)


def rank_expand_weights(V: torch.Tensor, eps: float = RANK_EXPAND_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``w_i = V_i / ||V_i||`` (n x d; e_1 where V_i = 0) and biases ``b_i = -||V_i|| + eps`` (n,),
    from the points V (n x d).

    Unit i is on where ``w_i . x > ||V_i|| - eps``: beyond the hyperplane through (just before) V_i
    orthogonal to V_i, so the thresholds tile the domain.
    """
    norms = V.norm(dim=1, keepdim=True)
    e1 = torch.zeros_like(V[0])
    e1[0] = 1.0
    W = torch.where(norms > 0, V / norms.clamp_min(1e-300), e1)
    return W, -norms[:, 0] + eps


def _check_rank_expand(spec: ArchSpec) -> None:
    if spec.encoding != "none":
        raise InitError(
            f"rank-expand places ReLU thresholds in coordinate space [-1,1]^d; it is not defined after an "
            f"encoding ({spec.encoding!r}); use --init pe/ff alone, or a model without encoding"
        )
    if spec.activation not in THRESHOLD_ACTIVATIONS:
        raise InitError(
            f"rank-expand is designed for threshold activations ({', '.join(THRESHOLD_ACTIVATIONS)}), "
            f"not {spec.activation!r}"
        )
    if not spec.bias:
        raise InitError("rank-expand needs a bias in the first layer (the thresholds are the biases)")


def rank_expand_inlet(model: CoordMLP, generator: torch.Generator | None = None, eps: float = RANK_EXPAND_EPS) -> None:
    """Set layer 0 to the rank-expanding init (DESIGN.md section 4); other layers untouched."""
    _check_rank_expand(model.spec)
    lin = model.linear(0)
    V = rank_expand_points(lin.out_features, lin.in_features)
    W, b = rank_expand_weights(V, eps)
    with torch.no_grad():
        lin.weight.copy_(W.to(lin.weight.dtype))
        lin.bias.copy_(b.to(lin.bias.dtype))


def _rank_expand_arch(spec: ArchSpec) -> ArchSpec:
    _check_rank_expand(spec)
    return _same(spec)


# ---------------------------------------------------------------- siren
def siren_bounds(n_in: int, first: bool, w0: float = SIREN_W0) -> float:
    """Half-width of SIREN's uniform weight init: 1/n_in (first layer), sqrt(6/n_in)/w0 (others)."""
    return 1.0 / n_in if first else math.sqrt(6.0 / n_in) / w0


def _check_siren(spec: ArchSpec) -> None:
    if spec.activation != "sine":
        raise InitError(f"siren init is for sine activations, not {spec.activation!r} (load with --activation sine)")


def siren_inlet(model: CoordMLP, generator: torch.Generator | None = None) -> None:
    """SIREN's first-layer weight init ``U(-1/n_in, 1/n_in)`` on linear layer 0 (its bias untouched)."""
    _check_siren(model.spec)
    lin = model.linear(0)
    b = siren_bounds(lin.in_features, True)
    with torch.no_grad():
        lin.weight.uniform_(-b, b, generator=generator)


def siren_init(model: CoordMLP, generator: torch.Generator | None = None) -> None:
    """Official SIREN code (vsitzmann/siren, ``sine_init``/``first_layer_sine_init``): weights only."""
    _check_siren(model.spec)
    w0 = model.spec.w0_hidden
    with torch.no_grad():
        for k in range(len(model.linears)):
            lin = model.linear(k)
            b = siren_bounds(lin.in_features, k == 0, w0)
            lin.weight.uniform_(-b, b, generator=generator)


def _siren_arch(spec: ArchSpec) -> ArchSpec:
    return replace(_same(spec), activation="sine", w0=SIREN_W0, w0_hidden=SIREN_W0)


def _siren_audio_arch(spec: ArchSpec) -> ArchSpec:
    """SIREN's audio recipe (vsitzmann/siren explore_siren.ipynb): first-layer w0 = 3000, hidden w0 = 30."""
    return replace(_same(spec), activation="sine", w0=SIREN_AUDIO_W0, w0_hidden=SIREN_W0)


# ---------------------------------------------------------------- encodings and batch norm
def _pe_arch(spec: ArchSpec) -> ArchSpec:
    return replace(_same(spec), encoding="positional", frequencies=PE_FREQUENCIES, include_input=True)


def _ff_arch(spec: ArchSpec) -> ArchSpec:
    return replace(_same(spec), encoding="fourier", fourier_features=FF_FEATURES)


def ff_init(model: CoordMLP, generator: torch.Generator | None = None) -> None:
    """Draw the stored Fourier matrix B ~ N(0, FF_SIGMA^2) (m x d)."""
    enc = model.encoding
    if not isinstance(enc, FourierEncoding):
        raise InitError(f"ff init needs a model with Fourier features, got encoding {model.spec.encoding!r}")
    with torch.no_grad():
        enc.B.normal_(0.0, FF_SIGMA, generator=generator)


def _bn_arch(spec: ArchSpec) -> ArchSpec:
    return replace(_same(spec), batchnorm=sorted({0, *spec.batchnorm}))


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("default", "torch's nn.Linear init, ReLU", _same, _noop, default_inlet),
        Scheme("rank-expand", "inlet paper: unit rows V_i/||V_i||, bias -||V_i||+eps, V_i on a grid",
               _rank_expand_arch, rank_expand_inlet, rank_expand_inlet),
        Scheme("siren", "sine, w0=30, official SIREN init", _siren_arch, siren_init, siren_inlet),
        Scheme("siren-audio", "SIREN's audio recipe: first-layer w0=3000, hidden w0=30, SIREN init",
               _siren_audio_arch, siren_init, siren_inlet),
        Scheme("pe", f"positional encoding (L={PE_FREQUENCIES}) + default init", _pe_arch, _noop, None),
        Scheme("ff", f"Fourier features (m={FF_FEATURES}, sigma={FF_SIGMA:g}) + default init", _ff_arch, ff_init, None),
        Scheme("bn", "batch norm after the inlet + default init", _bn_arch, _noop, None),
    )
}  # fmt: skip


def get_scheme(name: str) -> Scheme:
    """The registered scheme ``name`` (InitError listing the allowed names otherwise)."""
    if not isinstance(name, str) or name not in SCHEMES:
        raise InitError(f"unknown init {name!r}; allowed: {', '.join(SCHEMES)}")
    return SCHEMES[name]


def parse_schemes(text: str) -> list[str]:
    """Comma-separated scheme names, validated, in order, without duplicates."""
    if not isinstance(text, str):
        raise InitError(f"--inits must be comma-separated scheme names (str), got {text!r}")
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise InitError("--inits is empty; give comma-separated names, e.g. default,rank-expand")
    for n in names:
        get_scheme(n)
    return list(dict.fromkeys(names))


def _int_arg(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InitError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise InitError(f"{name} must be >= {low}, got {value}")
    return int(value)


def build_spec(scheme: str, in_features: int, out_features: int, depth: int, width: int) -> ArchSpec:
    """The architecture ``build_model`` would build (nothing allocated): for estimates before building."""
    if not isinstance(scheme, str):
        raise InitError(f"scheme must be a scheme name (str; allowed: {', '.join(SCHEMES)}), got {scheme!r}")
    sch = get_scheme(scheme)
    in_features = _int_arg("in_features", in_features)
    out_features = _int_arg("out_features", out_features)
    depth, width = _int_arg("depth (--depth)", depth), _int_arg("width (--width)", width)
    # the float32 weights alone, from the plain architecture (before a list of ``depth`` widths is even built)
    params = (in_features + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * out_features
    check_memory(4.0 * params, f"a {depth}x{width} MLP ({params:,} parameters)", "--width or --depth")
    return sch.arch(ArchSpec(in_features=in_features, out_features=out_features, hidden=[width] * depth))


def build_model(scheme: str, in_features: int, out_features: int, depth: int, width: int, seed: int = 0) -> CoordMLP:
    """A CoordMLP with ``depth`` hidden layers of ``width`` units, built and initialised by ``scheme``.

    Deterministic: torch's default init draws from a private generator seeded with ``seed`` (an integer
    in [0, 2^32 - 1], ``inrdiag.seeds``; the global RNG is neither used nor changed). Refused before any
    allocation when the float32 weights (and the init's temporaries) would not fit in memory.
    """

    spec = build_spec(scheme, in_features, out_features, depth, width)
    seed = check_seed(seed, "seed (--seed)")
    params = sum(o * i + o for o, i in spec.layer_shapes)
    check_memory(12.0 * params, f"a {depth}x{width} MLP ({params:,} parameters)", "--width or --depth")
    sch = get_scheme(scheme)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        model = CoordMLP(spec)
    sch.init(model, generator=gen)
    return model


def reinit_inlet(model: CoordMLP, scheme: str, seed: int = 0) -> None:
    """Re-initialise only linear layer 0 of ``model`` (a CoordMLP: ``inrdiag.load(...).model``) in place."""

    if not isinstance(model, CoordMLP):
        hint = " (pass loaded.model, not the Loaded object)" if hasattr(model, "model") else ""
        raise InitError(f"reinit_inlet needs a CoordMLP{hint}, got {type(model).__name__}")
    if not isinstance(scheme, str):
        raise InitError(f"scheme must be a scheme name (str), got {scheme!r}")
    sch = get_scheme(scheme)
    seed = check_seed(seed, "seed (--seed)")
    if sch.reinit_inlet is None:
        raise InitError(f"init {scheme!r} changes the architecture (encoding or batch norm), not just the "
                        f"inlet weights; re-initialisable: "
                        f"{', '.join(n for n, s in SCHEMES.items() if s.reinit_inlet)}")  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    sch.reinit_inlet(model, generator=gen)
