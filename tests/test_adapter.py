"""Module mode: every diagnostic on nn.Modules inrdiag did not build, against independent computations.

Each model below writes its own forward AND an explicit ``taps(x)`` that returns, by plain code, the
tensors the adapter must find (the input of every linear layer that follows a hidden layer): the
spectra are checked against numpy's SVD of those, the NTK against a plain torch.func Jacobian
contraction over all parameters, the SAE ablations against one spliced forward per atom.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_model
from tolerances import assert_close, tol
from torch import nn
from torch.func import functional_call, jacrev, vmap

import inrdiag
from inrdiag import CheckPolicy, ModuleAdapter, as_adapter, make_grid, rank_report, run_checks
from inrdiag.errors import InrdiagError, ModuleError
from inrdiag.ntk.factors import kernel_sum, layer_factors, linear_factors
from inrdiag.ntk.kernel import ntk_report
from inrdiag.sae.analysis import Scorer, ablate_atoms, analyse, layer_activations, splice_forward
from inrdiag.sae.model import SAEConfig, encode_all, train_sae
from inrdiag.spectra import gram_spectra


# ---------------------------------------------------------------- the modules (written here, not by inrdiag)
def _pe(x: torch.Tensor, L: int = 2) -> torch.Tensor:
    return torch.cat([x] + [f(2.0**k * math.pi * x) for k in range(L) for f in (torch.sin, torch.cos)], -1)


class NeRFSkip(nn.Module):
    """NeRF-style MLP: positional encoding (2 -> 10), the encoding concatenated again before layers.2,
    in-place ReLUs (the recorded pre-activations must survive them)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(26, 16), nn.Linear(16, 2)])
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        e = _pe(x)
        h = self.act(self.layers[0](e))
        h = self.act(self.layers[1](h))
        h = self.act(self.layers[2](torch.cat([h, e], -1)))
        return self.layers[3](h)

    def taps(self, x):
        e = _pe(x)
        z0 = torch.relu(self.layers[0](e))
        z1 = torch.cat([torch.relu(self.layers[1](z0)), e], -1)
        z2 = torch.relu(self.layers[2](z1))
        return {0: z0, 1: z1, 2: z2}


class Modulator(nn.Module):
    """siren-pytorch style: a ReLU stack on the latent, each layer reading [latent, previous]."""

    def __init__(self, latent: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(latent if i == 0 else latent + hidden, hidden) for i in range(layers))

    def forward(self, z):
        h, out = z, []
        for i, lin in enumerate(self.layers):
            h = torch.relu(lin(h if i == 0 else torch.cat([h, z], -1)))
            out.append(h)
        return out


class ModulatedSiren(nn.Module):
    """A SIREN whose hidden sines are multiplied by modulations computed from a learnt latent (like
    siren-pytorch's ``SirenWrapper(latent_dim=...)``), with a learnable first-layer w0."""

    def __init__(self) -> None:
        super().__init__()
        self.latent = nn.Parameter(torch.randn(6) * 0.5)
        self.mod = Modulator(6, 12, 2)
        self.net = nn.ModuleList([nn.Linear(2, 12), nn.Linear(12, 12)])
        self.last = nn.Linear(12, 1)
        self.w0 = nn.Parameter(torch.tensor(3.0))

    def forward(self, x):
        mods = self.mod(self.latent)
        h = x
        for i, (lin, m) in enumerate(zip(self.net, mods)):
            h = torch.sin((self.w0 if i == 0 else 1.0) * lin(h)) * m
        return self.last(h)

    def taps(self, x):
        mods = self.mod(self.latent)
        z0 = torch.sin(self.w0 * self.net[0](x)) * mods[0]
        z1 = torch.sin(self.net[1](z0)) * mods[1]
        return {2: z0, 3: z1}


class TwiceLinear(nn.Module):
    """One hidden linear layer applied twice in the same forward."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(2, 12)
        self.shared = nn.Linear(12, 12)
        self.out = nn.Linear(12, 1)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.shared(h))
        h = torch.tanh(self.shared(h))
        return self.out(h)

    def taps(self, x):
        return {0: torch.tanh(self.inp(x))}


def bn_mlp() -> nn.Sequential:
    seq = nn.Sequential(nn.Linear(2, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 12), nn.BatchNorm1d(12),
                        nn.Tanh(), nn.Linear(12, 2))  # fmt: skip
    with torch.no_grad():
        for bn in (seq[1], seq[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    return seq


class Wrapped(nn.Module):
    """Any module behind a forward inrdiag cannot see through: forces the generic (hooked) path."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class BNWrapped(Wrapped):
    def __init__(self) -> None:
        super().__init__(bn_mlp())

    def taps(self, x):
        s = self.inner
        z0 = s[2](s[1](s[0](x)))
        return {0: z0, 1: s[5](s[4](s[3](z0)))}


class PlainSiren(nn.Module):
    """A SIREN as a user writes it (official init), not built by inrdiag."""

    def __init__(self, widths=(2, 16, 16, 16, 1), w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = w0
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        with torch.no_grad():
            for i, lin in enumerate(self.linears):
                bound = 1 / lin.in_features if i == 0 else math.sqrt(6 / lin.in_features) / w0
                lin.weight.uniform_(-bound, bound)

    def forward(self, x):
        for lin in self.linears[:-1]:
            x = torch.sin(self.w0 * lin(x))
        return self.linears[-1](x)

    def taps(self, x):
        out = {}
        for i, lin in enumerate(self.linears[:-1]):
            x = torch.sin(self.w0 * lin(x))
            out[i] = x
        return out


MODELS = {"nerf-skip": NeRFSkip, "modulated-siren": ModulatedSiren, "twice": TwiceLinear, "batchnorm": BNWrapped,
          "siren": PlainSiren}  # fmt: skip
#: d for modules whose first registered nn.Linear does not see the coordinates (an encoding, a modulator).
IN_FEATURES = {"nerf-skip": 2, "modulated-siren": 2}


def build(name: str, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]().to(dtype).eval()


def adapter(name: str, dtype=torch.float64) -> ModuleAdapter:
    return as_adapter(build(name, dtype), in_features=IN_FEATURES.get(name))


# ---------------------------------------------------------------- structure, pinned
def test_recorded_linear_order_and_paths_are_pinned():
    """Like TransformerLens pins hook names: the exact layers, call order and routing each module gets."""
    got = {}
    for name in MODELS:
        ad = adapter(name)
        got[name] = [(layer.name, layer.calls, layer.ntk_path) for layer in ad.layers], ad.hidden, ad.head
    assert got["nerf-skip"] == ([("layers.0", 1, "linear"), ("layers.1", 1, "linear"), ("layers.2", 1, "linear"),
                                 ("layers.3", 1, "linear")], [0, 1, 2], 3)  # fmt: skip
    assert got["modulated-siren"] == ([("mod.layers.0", 1, "generic"), ("mod.layers.1", 1, "generic"),
                                       ("net.0", 1, "linear"), ("net.1", 1, "linear"), ("last", 1, "linear")],
                                      [2, 3], 4)  # fmt: skip
    assert got["twice"] == ([("inp", 1, "linear"), ("shared", 2, "generic"), ("out", 1, "linear")], [0], 2)
    assert got["batchnorm"] == ([("inner.0", 1, "linear"), ("inner.3", 1, "linear"), ("inner.6", 1, "linear")],
                                [0, 1], 2)  # fmt: skip
    assert got["siren"] == ([(f"linears.{k}", 1, "linear") for k in range(4)], [0, 1, 2], 3)


def test_representations_say_what_they_are():
    ad = adapter("nerf-skip")
    assert [None if r is None else (r.reader, r.call, r.width) for r in ad.representations] == [
        (1, 0, 16), (2, 0, 26), (3, 0, 16), None]  # fmt: skip
    assert "input of layers.2 is 26 wide: layers.1's 16 outputs + 10 other features (concatenated)" in (
        ad.structure_notes()
    )
    tw = adapter("twice")
    assert tw.representations[0].reader == 1 and tw.representations[0].call == 0
    assert "called 2 times" in tw.reasons[1] and "output head" in tw.reasons[2]
    with pytest.raises(ModuleError, match="called 2 times"):
        tw.features(make_grid((3, 3), dtype=torch.float64), 1)
    mod = adapter("modulated-siren")
    assert "not one row per point" in mod.layers[0].reason and mod.representations[0] is None
    assert mod.notes == []  # in_features given
    with pytest.raises(ModuleError, match="pass in_features=d"):  # read from mod.layers.0 (the latent's width)
        as_adapter(build("modulated-siren"))
    assert adapter("siren").notes == [
        "in_features = 2, read from the first nn.Linear (linears.0); pass in_features= if the module encodes "
        "coordinates before it"]  # fmt: skip


def test_coord_mlp_layers_and_loaded_names(tmp_path):
    model = tiny_model(batchnorm=[1])
    ad = as_adapter(model)
    assert [layer.name for layer in ad.layers] == [f"linears.{k}" for k in range(4)]
    assert ad.is_chain and ad.hidden == [0, 1, 2] and ad.notes == []
    assert as_adapter(ad) is ad
    seq = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    torch.save(seq.state_dict(), tmp_path / "seq.pt")
    loaded = inrdiag.load(tmp_path / "seq.pt", activation="relu", out_activation="none")
    la = as_adapter(loaded)
    assert [layer.name for layer in la.layers] == loaded.layer_keys
    assert rank_report(loaded, grid=6, device="cpu").layers[0].name == loaded.layer_keys[0]


# ---------------------------------------------------------------- spectra against numpy
def _numpy_sv(z: torch.Tensor) -> np.ndarray:
    return np.linalg.svd(z.detach().to(torch.float64).numpy(), compute_uv=False)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_spectra_match_numpy_svd(name, dtype):
    model = build(name, dtype)
    n = 12
    rep = rank_report(model, grid=n, device="cpu", in_features=IN_FEATURES.get(name))
    x = make_grid((n, n), dtype=dtype)
    with torch.no_grad():
        taps = model.taps(x)
    assert sorted(taps) == [layer.index for layer in rep.layers if layer.representation is not None]
    for k, z in taps.items():
        r = rep.layers[k].representation
        s = _numpy_sv(z)
        # The engine's Gram route computes s^2 (eigenvalues of Z^T Z): compared as eigenvalues, relative to s_1^2.
        assert_close(np.square(r.singular_values), s**2, dtype, "eig", scale=float(s[0] ** 2))
        if dtype == torch.float64:
            assert r.numerical_rank == int((s > 1e-3 * s[0]).sum())
            assert math.isclose(r.stable_rank, (s**2).sum() / s[0] ** 2, rel_tol=tol(dtype, "eig").rtol)
        assert r.width == z.shape[1] and r.max_rank == min(n * n, z.shape[1])
        assert r.dead_units == int((z.abs().amax(0) == 0).sum())  # exactly-zero columns, any activation
    ad = as_adapter(model, in_features=IN_FEATURES.get(name))
    for layer in rep.layers:
        s = _numpy_sv(ad.linear(layer.index).weight)
        assert math.isclose(layer.weight_stable_rank, (s**2).sum() / s[0] ** 2, rel_tol=tol(dtype, "eig").rtol)
    assert rep.activation == "unknown" and any("forward hooks" in note for note in rep.notes)


def test_gram_chunking_and_dead_units_on_a_module():
    model = build("nerf-skip")
    ad = as_adapter(model, in_features=2)
    g1, a1 = gram_spectra(ad, (9, 7), chunk=5)
    g2, a2 = gram_spectra(ad, (9, 7), chunk=10_000)
    for p, q in zip(g1, g2):
        assert_close(p, q, torch.float64)
    assert all(torch.equal(p, q) for p, q in zip(a1, a2))
    with torch.no_grad():  # kill a unit everywhere: it is reported dead, whatever the activation
        model.layers[0].bias[3] = -1e3
    rep = rank_report(model, grid=9, device="cpu", in_features=2)
    assert rep.layers[0].representation.dead_units >= 1


# ---------------------------------------------------------------- NTK against the Jacobian contraction
def _jacobian(model, x):
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(p, x1):
        return functional_call(model, {**p, **buffers}, (x1[None],))[0]

    return vmap(jacrev(f), in_dims=(None, 0))(params, x)


def _contract(jac, names, n):
    J = torch.cat([jac[k].reshape(n, jac[k].shape[1], -1) for k in names], dim=2)
    return torch.einsum("ncp,mcp->nm", J, J)


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ntk_matches_jacobian_contraction(name):
    model = build(name)
    x = make_grid((7, 7), dtype=torch.float64)
    jac = _jacobian(model, x)
    ref = _contract(jac, list(jac), x.shape[0])
    ad = as_adapter(model, in_features=IN_FEATURES.get(name))
    factors = layer_factors(ad, x)
    assert rel(kernel_sum(factors), ref) <= tol(torch.float64).rtol
    # Every parameter is in exactly one group, and each group's kernel is its own block of J J^T.
    path_of = {layer.name: layer.path for layer in ad.layers}
    groups = {}
    for f in factors:
        prefix = path_of.get(f.name, f.name)
        groups[f.name] = [k for k in jac if k == prefix or k.startswith(prefix + ".")]
        assert rel(f.kernel(), _contract(jac, groups[f.name], x.shape[0])) <= tol(torch.float64).rtol, f.name
    flat = sorted(k for v in groups.values() for k in v)
    assert flat == sorted(jac) and sum(f.parameters for f in factors) == sum(p.numel() for p in model.parameters())
    # Chunked (5 rows at a time, generic path included) == unchunked.
    assert rel(kernel_sum(layer_factors(ad, x, chunk=5)), kernel_sum(factors)) <= tol(torch.float64).rtol
    # The report: exact eigenvalues, traces, per-group shares summing to 1, the generic groups named.
    rep = ntk_report(model, grid=7, method="exact", top_k=5, device="cpu", in_features=IN_FEATURES.get(name))
    ev = torch.linalg.eigvalsh(ref).flip(0)
    assert_close(rep.eigenvalues[:5], ev[:5], torch.float64, "eig")
    assert_close(rep.trace, torch.trace(ref), torch.float64)
    assert_close(sum(g.trace_share for g in rep.groups), 1.0, torch.float64)
    generic = [g for g in rep.groups if g.kind == "generic"]
    if generic:
        assert all(g.note for g in generic)
        assert any(n.startswith("generic torch.func path") for n in rep.notes)


@pytest.mark.parametrize("name", ["nerf-skip", "modulated-siren", "twice"])
def test_ntk_float32_cross_check(name):
    """float32, the dtype models run in: factors and report against the float64 Jacobian contraction."""
    m32 = build(name, torch.float32)
    m64 = build(name, torch.float64)
    with torch.no_grad():  # the very same weights, rounded to float32 once
        for p32, p64 in zip(m32.parameters(), m64.parameters()):
            p64.copy_(p32.double())
    x = make_grid((7, 7), dtype=torch.float64)
    jac = _jacobian(m64, x)
    ref = _contract(jac, list(jac), x.shape[0])
    got = kernel_sum(layer_factors(as_adapter(m32, in_features=IN_FEATURES.get(name)), x.float()))
    assert rel(got.double(), ref) <= tol(torch.float32).rtol
    rep = ntk_report(m32, grid=7, method="exact", top_k=3, dtype="float32", device="cpu",
                     in_features=IN_FEATURES.get(name))  # fmt: skip
    ev = torch.linalg.eigvalsh(ref).flip(0)[:3]
    assert_close(rep.eigenvalues[:3], ev, torch.float32, "eig")


class ComplexWire(nn.Module):
    """WIRE-like: complex linear layers with a complex Gabor-ish activation; real output."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(2, 8)
        self.hidden = nn.Linear(8, 8, dtype=torch.complex128)
        self.out = nn.Linear(8, 1, dtype=torch.complex128)

    def forward(self, x):
        h = self.first(x)
        z = torch.exp(1j * 3.0 * h - h.abs() ** 2).to(torch.complex128)
        u = self.hidden(z)
        z = torch.exp(1j * 2.0 * u.real) * u.imag.tanh()
        return self.out(z).real


def test_complex_parameters_are_real_and_imaginary_parts():
    """Generic path: each complex weight counts as (Re, Im); the reference differentiates them as reals."""
    torch.manual_seed(0)
    model = ComplexWire().double()
    ad = as_adapter(model)
    assert [(layer.name, layer.ntk_path) for layer in ad.layers] == [
        ("first", "linear"), ("hidden", "generic"), ("out", "generic")]  # fmt: skip
    x = make_grid((6, 6), dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    real = {k: torch.view_as_real(v) if v.is_complex() else v for k, v in params.items()}

    def f(p, x1):
        q = {k: torch.view_as_complex(v) if params[k].is_complex() else v for k, v in p.items()}
        return functional_call(model, q, (x1[None],))[0]

    jac = vmap(jacrev(f), in_dims=(None, 0))(real, x)
    ref = _contract(jac, list(jac), x.shape[0])
    factors = layer_factors(ad, x)
    assert rel(kernel_sum(factors), ref) <= tol(torch.float64).rtol
    assert sum(f.parameters for f in factors) == sum(v.numel() for v in real.values())
    assert "complex weights" in [f.note for f in factors if f.name == "hidden"][0]
    # The representation read by the complex layer is complex: its spectrum from Z^H Z.
    rep = rank_report(model, grid=6, device="cpu")
    with torch.no_grad():
        h = model.first(x)
        z = torch.exp(1j * 3.0 * h - h.abs() ** 2).to(torch.complex128)
    s = np.linalg.svd(z.numpy(), compute_uv=False)
    sv = np.asarray(rep.layers[0].representation.singular_values)
    assert_close(sv**2, s**2, torch.complex128, "eig", scale=float(s[0] ** 2))


# ---------------------------------------------------------------- CoordMLP: bit-identical to the old code path
def _old_linear_factors(model, x):
    """linear_factors as it was before the adapter: CoordMLP.trace and one backward per channel."""
    tr = model.trace(x)
    C = model.spec.out_features
    per_c = [torch.autograd.grad(tr.out[:, c].sum(), tr.pre, retain_graph=c < C - 1) for c in range(C)]
    out = []
    for k in range(len(model.linears)):
        A = torch.cat([tr.inputs[k].detach(), torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        D = torch.cat([g[k] for g in per_c], 1) if C > 1 else per_c[0][k]
        out.append((A, D))
    return out


@pytest.mark.parametrize("arch", [dict(activation="relu", out_features=3), dict(activation="sine", batchnorm=[1]),
                                  dict(activation="relu", encoding="fourier", fourier_features=4)])  # fmt: skip
def test_coord_mlp_through_the_adapter_is_bit_identical(arch):
    model = tiny_model(**arch)
    x = make_grid((6, 5), dtype=torch.float64)
    for (A, D), f in zip(_old_linear_factors(model, x), linear_factors(model, x)):
        assert torch.equal(A, f.A) and torch.equal(D, f.D)
    grams, alive = gram_spectra(model, (6, 5))
    with torch.no_grad():
        a = model.encoding(x)
        for k in range(len(model.spec.hidden)):
            a = model.hidden_step(k, model.linears[k](a))
            assert torch.equal(grams[k], a.T @ a)  # one chunk: the same single GEMM
            assert torch.equal(layer_activations(model, x, k), model.features(x, k))
            z = model.features(x, k) * 0.5
            assert torch.equal(splice_forward(model, k, z), model.head(z, k + 1))
    # The hooked generic path (the same module behind an opaque forward) equals the CoordMLP fast path.
    ad, gen = as_adapter(model), as_adapter(Wrapped(model), in_features=2)
    assert ad.is_chain and not gen.is_chain
    with torch.no_grad():
        for k in ad.hidden:
            z = ad.features(x, k)
            assert torch.equal(z, gen.features(x, k))
            assert torch.equal(ad.splice(None, k, 0.5 * z), gen.splice(x, k, 0.5 * z))
            P = ad.linear(k)(ad.features(x, k - 1) if k else model.encoding(x))
            assert torch.equal(ad.splice_pre(None, k, P + 0.1), gen.splice_pre(x, k, P + 0.1))
    for fa, fb in zip(layer_factors(model, x), layer_factors(gen, x)):
        assert torch.equal(fa.A, fb.A) and torch.equal(fa.D, fb.D)


def test_sequential_chain_fast_path_equals_hooks():
    seq = bn_mlp().double().eval()
    ad, gen = as_adapter(seq), as_adapter(Wrapped(seq))
    assert ad.is_chain and not gen.is_chain
    x = make_grid((5, 5), dtype=torch.float64)
    with torch.no_grad():
        for k in ad.hidden:
            z = ad.features(x, k)
            assert torch.equal(z, gen.features(x, k)) and torch.equal(ad.all_features(x)[k], z)
            assert torch.equal(ad.splice(None, k, z * 2), gen.splice(x, k, z * 2))
        P = torch.randn(25, 12, dtype=torch.float64)
        assert torch.equal(ad.splice_pre(None, 1, P), gen.splice_pre(x, 1, P))


# ---------------------------------------------------------------- hooks and errors
def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Fragile(PlainSiren):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def forward(self, x):
        x = torch.sin(self.w0 * self.linears[0](x))
        if self.fail:
            raise RuntimeError("boom")
        for lin in self.linears[1:-1]:
            x = torch.sin(self.w0 * lin(x))
        return self.linears[-1](x)


def test_hooks_removed_after_a_forward_that_raises():
    model = Fragile().double()
    model.fail = True
    with pytest.raises(ModuleError, match="boom"):
        as_adapter(model)
    assert _hook_count(model) == 0
    model.fail = False
    ad = as_adapter(model)
    x = make_grid((4, 4), dtype=torch.float64)
    ad.features(x, 1)  # stops the forward early from inside a hook
    assert _hook_count(model) == 0
    model.fail = True
    for call in (lambda: ad.record(x), lambda: ad.features(x, 2), lambda: ad.splice(x, 2, torch.zeros(16, 16)),
                 lambda: ad.splice_pre(x, 2, torch.zeros(16, 16)), lambda: ad.all_features(x)):  # fmt: skip
        with pytest.raises(RuntimeError, match="boom"):
            call()
        assert _hook_count(model) == 0
    assert model.training  # the probe's eval mode was undone


class TupleOut(PlainSiren):
    def forward(self, x):
        return super().forward(x), x


class FlatOut(PlainSiren):
    def forward(self, x):
        return super().forward(x)[:, 0]


class BatchMixing(PlainSiren):
    def forward(self, x):
        return super().forward(x - x.mean(0))


@pytest.mark.parametrize("make,kw,msg", [
    (NeRFSkip, {}, "in_features"),  # an encoding before the first linear layer
    (TupleOut, {}, "returns a tuple"),
    (FlatOut, {}, r"\(N, 1\) rather than \(N,\)"),
    (BatchMixing, {}, "depends on the other points"),
    (lambda: nn.Sequential(nn.Tanh()), {}, "no nn.Linear"),
    (PlainSiren, {"in_features": 3}, "in_features"),
])  # fmt: skip
def test_bad_modules_are_one_line_errors(make, kw, msg):
    with pytest.raises(ModuleError, match=msg) as err:
        as_adapter(make().double(), **kw)
    assert "\n" not in str(err.value) and isinstance(err.value, InrdiagError)
    with pytest.raises(ModuleError, match="expected a torch.nn.Module"):
        as_adapter("model.pt")


# ---------------------------------------------------------------- SAE analysis on modules
def _sae_setup(name, layer, atoms=16, k=3):
    model = build(name)
    ad = as_adapter(model, in_features=IN_FEATURES.get(name))
    x = make_grid((6, 6), dtype=torch.float64)
    with torch.no_grad():
        z = layer_activations(ad, x, layer)
    sae = train_sae(z, SAEConfig(atoms=atoms, k=k, steps=20, batch_size=16)).sae.double()
    y = torch.rand(36, ad.out_features, dtype=torch.float64)
    return model, ad, x, z, sae, Scorer("image", y)


@pytest.mark.parametrize("name,layer", [("nerf-skip", 1), ("nerf-skip", 2), ("twice", 0), ("modulated-siren", 3)])
def test_sae_ablation_on_modules_matches_one_by_one(name, layer):
    """Batched ablations (via the reader's output, or its input when the reader is called twice)
    equal one full spliced forward per atom; the identity splice is exact."""
    model, ad, x, z, sae, scorer = _sae_setup(name, layer)
    with torch.no_grad():
        assert torch.equal(splice_forward(ad, layer, z, x), model(x))
        codes = encode_all(sae, z)
        ab = ablate_atoms(ad, layer, sae, codes, scorer, chunk=7, x=x)
        totals, base_total = ab.totals, ab.base
        f = sae.encode(z)
        base = scorer.metric(scorer.point_stats(splice_forward(ad, layer, sae.decode(f), x)).sum(0))
        assert_close(scorer.metric(base_total), base, torch.float64)
        got = scorer.metric(totals)
        for j in range(sae.d_sae):
            g = f.clone()
            g[:, j] = 0
            want = scorer.metric(scorer.point_stats(splice_forward(ad, layer, sae.decode(g), x)).sum(0))
            assert_close(got[j], want, torch.float64, scale=abs(base))
    with pytest.raises(ModuleError, match="pass the points x"):
        splice_forward(ad, layer, z)


def test_analyse_on_a_skip_connection_mlp():
    model, ad, x, z, trained, _ = _sae_setup("nerf-skip", 1)
    y = torch.rand(36, 2, dtype=torch.float64)
    cfg = SAEConfig(atoms=16, k=3, steps=20, batch_size=16)
    res = analyse(ad, 1, x, y, "image", cfg, device="cpu", grid=(6, 6), sae=trained)
    rep, sae = res.report, res.sae
    assert rep.width == 26 and sae.d_in == 26 and rep.ablated == int((torch.tensor(rep.mass) > 0).sum())
    assert any("concatenated" in n for n in rep.notes)
    with torch.no_grad():  # the reported drops are the one-by-one recomputation
        f = sae.encode(z)
        scorer = Scorer("image", y)
        base = scorer.metric(scorer.point_stats(splice_forward(ad, 1, sae.decode(f), x)).sum(0))
        assert_close(rep.metric_spliced, base, torch.float64)
        for j, drop in list(rep.ablation.items())[:6]:
            g = f.clone()
            g[:, j] = 0
            want = scorer.metric(scorer.point_stats(splice_forward(ad, 1, sae.decode(g), x)).sum(0))
            assert_close(drop, 0.0 if want == base else base - want, torch.float64, scale=abs(base))
    from inrdiag.sae.model import SAEError

    with pytest.raises(SAEError, match="no representation"):
        analyse(as_adapter(build("twice")), 1, x, y[:, :1], "image", cfg)


# ---------------------------------------------------------------- check on a plain module
def test_run_checks_on_a_plain_module():
    model = build("siren")
    pol = CheckPolicy(min_inlet_effective_rank_fraction=0.01, min_weight_stable_rank=1.0, max_dead_fraction=0.5,
                      grid=8)  # fmt: skip
    rep = run_checks(model, pol, device="cpu")
    assert rep.passed and rep.exit_code == 0
    rows = {r.name: r for r in rep.rows}
    assert rows["max dead-unit fraction"].value == 0.0 and rows["inlet effective-rank fraction"].value > 0.01
    assert rows["min weight stable rank"].detail.startswith("layer ")
    with torch.no_grad():
        model.linears[1].weight[0, 0] = float("nan")
    bad = run_checks(model, pol, device="cpu")
    assert not bad.passed and bad.rows[0].detail == "linears.1.weight"
    mod = run_checks(build("modulated-siren"), pol, device="cpu", in_features=2)
    assert mod.rank.layers[2].representation is not None and mod.rows[1].detail.endswith("of 12")


@pytest.mark.parametrize("out_activation", ["sigmoid", "sine", "tanh"])
def test_coord_mlp_fast_path_keeps_the_output_activation(out_activation):
    """The CoordMLP suffix passes (SAE splice and ablations) end with the output activation, as forward does."""
    from inrdiag import ArchSpec, CoordMLP
    from inrdiag.models.adapter import as_adapter

    torch.manual_seed(0)
    spec = ArchSpec(in_features=2, out_features=2, hidden=[8, 8], activation="sine", w0=30.0, w0_hidden=30.0,
                    out_activation=out_activation)  # fmt: skip
    model = CoordMLP(spec).double().eval()
    ad = as_adapter(model)
    x = torch.rand(20, 2, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        y = model(x)
        for k in ad.hidden:
            assert_close(ad.splice(x, k, ad.features(x, k)), y, torch.float64)
        rec = ad.record(x)
        assert set(rec.outputs) == set(range(len(ad.layers)))
        for k, pre in rec.outputs.items():  # the last one: only the output activation is left to apply
            assert_close(ad.splice_pre(x, k, pre.detach()), y, torch.float64)
