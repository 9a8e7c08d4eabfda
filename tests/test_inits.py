"""Inlet schemes pinned against their formulas (DESIGN.md section 4) and the measured rank levels."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model
from tolerances import assert_close

from inrdiag.errors import InrdiagError
from inrdiag.models.inits import (
    FF_SIGMA,
    SCHEMES,
    build_model,
    get_scheme,
    parse_schemes,
    rank_expand_points,
    reinit_inlet,
    siren_bounds,
)
from inrdiag.spectra import layer_ranks


def test_rank_expand_grid_exact_when_width_is_p_squared():
    m = build_model("rank-expand", 2, 1, depth=2, width=16, seed=3)
    W = m.linears[0].weight.detach().double()
    b = m.linears[0].bias.detach().double()
    a = torch.linspace(-1, 1, 4, dtype=torch.float64)
    V = torch.stack(torch.meshgrid(a, a, indexing="ij"), -1).reshape(-1, 2)
    norms = V.norm(dim=1)
    # The model's float32 weights against the float64 formula: float32 rounding.
    assert_close(W.norm(dim=1), torch.ones(16, dtype=torch.float64), torch.float32)
    assert_close(W, V / norms[:, None], torch.float32)
    assert_close(b, -norms + 0.01, torch.float32)
    # Unit i switches on just before V_i along its direction: w_i . (t V_i/||V_i||) + b_i = t - ||V_i|| + eps.
    for i in range(16):
        on = (W[i] @ V[i] + b[i]).item()
        assert_close(on, 0.01, torch.float32, scale=1.0)
        assert (W[i] @ (V[i] * 0.9) + b[i]).item() < 0 or norms[i] < 0.2


def test_rank_expand_zero_point_and_odd_grid():
    m = build_model("rank-expand", 2, 1, depth=1, width=9, seed=0)  # 3x3 grid holds V = 0
    W, b = m.linears[0].weight.detach(), m.linears[0].bias.detach()
    assert torch.equal(W[4], torch.tensor([1.0, 0.0]))
    assert_close(b[4], 0.01, torch.float32)
    assert_close(W.norm(dim=1), torch.ones(9), torch.float32)


def test_rank_expand_generalisation_other_widths_and_3d():
    V = rank_expand_points(20, 2)  # 4x4 grid + 4 Sobol points
    assert V.shape == (20, 2) and V.abs().max() <= 1
    a = torch.linspace(-1, 1, 4, dtype=torch.float64)
    assert torch.equal(V[:16], torch.stack(torch.meshgrid(a, a, indexing="ij"), -1).reshape(-1, 2))
    assert torch.equal(V, rank_expand_points(20, 2))  # deterministic
    V3 = rank_expand_points(27, 3)
    a3 = torch.linspace(-1, 1, 3, dtype=torch.float64)
    assert torch.equal(V3, torch.stack(torch.meshgrid(a3, a3, a3, indexing="ij"), -1).reshape(-1, 3))
    m = build_model("rank-expand", 3, 1, depth=1, width=30, seed=0)
    assert_close(m.linears[0].weight.norm(dim=1), torch.ones(30), torch.float32)


def test_rank_expand_refuses_encodings_and_sine():
    with pytest.raises(InrdiagError, match="encoding"):
        reinit_inlet(tiny_model(encoding="fourier", fourier_features=4), "rank-expand")
    with pytest.raises(InrdiagError, match="threshold activations"):
        reinit_inlet(tiny_model(activation="sine"), "rank-expand")


def test_rank_expand_inlet_rank_measured_vs_default():
    """DESIGN.md section 4: width 256 on a 256x256 grid, tol 1e-3: measured 204 vs 67 (eff. 32.3 vs 9.5)."""
    shape = (256, 256)
    re = layer_ranks(build_model("rank-expand", 2, 1, 1, 256, seed=0), shape)[0]
    de = layer_ranks(build_model("default", 2, 1, 1, 256, seed=0), shape)[0]
    assert re.numerical_rank >= 0.75 * 256
    assert re.numerical_rank >= 2 * de.numerical_rank
    assert re.effective_rank >= 2.5 * de.effective_rank
    assert re.numerical_rank == 204 and re.effective_rank == pytest.approx(
        32.3, abs=0.05
    )  # the documented value, to 1 decimal
    assert re.dead_units == 0


def test_siren_bounds_official_code():
    m = build_model("siren", 2, 3, depth=3, width=64, seed=1)
    assert m.spec.activation == "sine" and m.spec.w0 == 30 and m.spec.w0_hidden == 30
    for k, lin in enumerate(m.linears):
        bound = 1 / 2 if k == 0 else math.sqrt(6 / 64) / 30
        assert_close(siren_bounds(lin.in_features, k == 0), bound, torch.float64)
        w = lin.weight.detach()
        assert w.abs().max() <= bound
        assert w.abs().max() >= 0.9 * bound  # fills the interval (uniform)
        assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.35)  # a sample variance, not rounding
        bias_bound = 1 / math.sqrt(lin.in_features)  # biases keep torch's default
        assert lin.bias.abs().max() <= bias_bound


def test_default_matches_torch_default_bounds():
    m = build_model("default", 2, 1, depth=2, width=32, seed=0)
    for lin in m.linears:
        assert lin.weight.abs().max() <= 1 / math.sqrt(lin.in_features)
    before = m.linears[1].weight.clone()
    reinit_inlet(m, "default", seed=5)
    assert torch.equal(m.linears[1].weight, before)


def test_pe_ff_bn_architectures():
    pe = build_model("pe", 2, 1, 2, 16)
    assert pe.spec.encoding == "positional" and pe.spec.encoded_features == 2 * 13
    ff = build_model("ff", 2, 1, 2, 16, seed=2)
    B = ff.encoding.B
    assert ff.spec.encoding == "fourier" and B.shape == (256, 2)
    assert B.std().item() == pytest.approx(FF_SIGMA, rel=0.1)  # a sample std, not rounding
    assert "encoding.B" in ff.state_dict()  # stored in the checkpoint
    bn = build_model("bn", 2, 1, 2, 16)
    assert bn.spec.batchnorm == [0]


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    for name in SCHEMES:
        a, b = build_model(name, 2, 1, 2, 8, seed=7), build_model(name, 2, 1, 2, 8, seed=7)
        for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(va, vb), (name, ka)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(build_model("default", 2, 1, 1, 8, seed=1).linears[0].weight,
                           build_model("default", 2, 1, 1, 8, seed=2).linears[0].weight)  # fmt: skip


def test_unknown_names_and_reinit_limits():
    with pytest.raises(InrdiagError, match="unknown init 'xavier'; allowed: default, rank-expand"):
        get_scheme("xavier")
    with pytest.raises(InrdiagError, match="unknown init"):
        parse_schemes("default,nope")
    assert parse_schemes("default, rank-expand,default") == ["default", "rank-expand"]
    with pytest.raises(InrdiagError, match="changes the architecture"):
        reinit_inlet(tiny_model(), "pe")
