"""Spectra and stable ranks against numpy's SVD in float64, on every supported architecture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_model

from inrdiag import make_grid, rank_report, spectrum_stats, weight_stable_rank
from inrdiag.spectra import recommend_freeze_depth

ARCHS = [
    dict(activation="relu"),
    dict(activation="sine", w0=30.0, w0_hidden=30.0),
    dict(activation="relu", encoding="fourier", fourier_features=8),
    dict(activation="relu", encoding="positional", frequencies=3),
    dict(activation="relu", batchnorm=[0, 1]),
    dict(activation="finer", w0=10.0, w0_hidden=10.0),
    dict(activation="gauss", w0=3.0, w0_hidden=3.0),
    dict(activation="tanh", out_features=3),
]


def numpy_reference(model, n):
    """Z_k by an explicit numpy forward pass, and its singular values by numpy's SVD."""
    x = make_grid((n, n)).numpy()
    spec = model.spec
    if spec.encoding == "fourier":
        B = model.encoding.B.numpy()
        a = np.concatenate([np.sin(2 * np.pi * x @ B.T), np.cos(2 * np.pi * x @ B.T)], axis=1)
    elif spec.encoding == "positional":
        parts = [x]
        for k in range(spec.frequencies):
            parts += [np.sin(2.0**k * np.pi * x), np.cos(2.0**k * np.pi * x)]
        a = np.concatenate(parts, axis=1)
    else:
        a = x
    zs = []
    for k, lin in enumerate(model.linears[:-1]):
        h = a @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        if str(k) in model.norms:
            bn = model.norms[str(k)]
            h = (h - bn.running_mean.numpy()) / np.sqrt(
                bn.running_var.numpy() + bn.eps
            ) * bn.weight.detach().numpy() + bn.bias.detach().numpy()
        w0 = spec.w0 if k == 0 else spec.w0_hidden
        a = {
            "relu": lambda h: np.maximum(h, 0),
            "sine": lambda h: np.sin(w0 * h),
            "finer": lambda h: np.sin(w0 * (np.abs(h) + 1) * h),
            "gauss": lambda h: np.exp(-((w0 * h) ** 2)),
            "tanh": np.tanh,
        }[spec.activation](h)
        zs.append(a)
    return zs


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(f"{v}" for v in a.values()))
def test_rank_report_matches_numpy_svd(arch):
    model = tiny_model(**arch)
    n = 20
    rep = rank_report(model, grid=n, device="cpu")
    zs = numpy_reference(model, n)
    assert rep.points == n * n and rep.grid_shape == [n, n]
    for k, z in enumerate(zs):
        s = np.linalg.svd(z, compute_uv=False)
        r = rep.layers[k].representation
        got = np.array(r.singular_values)
        # The Gram route is exact down to ~1e-7 s_1 in float64.
        np.testing.assert_allclose(got, s, rtol=1e-9, atol=1e-7 * s[0])
        p = s / s.sum()
        p = p[p > 0]
        assert math.isclose(r.effective_rank, math.exp(-(p * np.log(p)).sum()), rel_tol=1e-6)
        assert r.numerical_rank == int((s > 1e-3 * s[0]).sum())
        assert math.isclose(r.stable_rank, (s**2).sum() / s[0] ** 2, rel_tol=1e-9)
        assert r.max_rank == min(n * n, z.shape[1])
        if arch["activation"] == "relu":
            assert r.dead_units == int((np.abs(z).max(axis=0) == 0).sum())
        else:
            assert r.dead_units is None
    for layer, lin in zip(rep.layers, model.linears):
        w = lin.weight.detach().numpy()
        s = np.linalg.svd(w, compute_uv=False)
        assert math.isclose(layer.weight_stable_rank, (s**2).sum() / s[0] ** 2, rel_tol=1e-10)
    assert rep.layers[-1].representation is None


def test_spectrum_stats_known_values():
    # Equal singular values: every rank equals the count.
    st = spectrum_stats([2.0, 2.0, 2.0, 2.0], max_rank=4)
    assert st.numerical_rank == 4 and math.isclose(st.effective_rank, 4.0) and math.isclose(st.stable_rank, 4.0)
    st = spectrum_stats([1.0, 1e-4, 0.0], max_rank=3)
    assert st.numerical_rank == 1 and st.stable_rank == pytest.approx(1.0 + 1e-8)
    assert spectrum_stats([0.0, 0.0], max_rank=2).numerical_rank == 0


def test_weight_stable_rank_rank_one_and_orthogonal():
    u = torch.randn(7, 1, dtype=torch.float64)
    assert weight_stable_rank(u @ torch.randn(1, 5, dtype=torch.float64)) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert weight_stable_rank(q) == pytest.approx(6.0)


def test_recommended_freeze_depth_is_one_plus_argmax():
    assert recommend_freeze_depth([1.0, 5.0, 9.0, 3.0, 1.0], [0, 1, 2, 3]) == 3
    assert recommend_freeze_depth([1.0, 5.0, 9.0, 3.0, 1.0], [0, 1]) == 2
    model = tiny_model(hidden=(8, 16, 16, 16))
    rep = rank_report(model, grid=8, device="cpu")
    srs = [layer.weight_stable_rank for layer in rep.layers[:-1]]
    assert rep.recommended_freeze_depth == 1 + int(np.argmax(srs))


def test_default_relu_inlet_is_rank_deficient():
    """Measured on torch's default init (DESIGN.md section 4): far below full rank."""
    torch.manual_seed(0)
    model = tiny_model(hidden=(256, 256), dtype=torch.float32)
    rep = rank_report(model, grid=128, device="cpu")
    inlet = rep.layers[0].representation
    assert inlet.numerical_rank < 0.5 * 256
    assert inlet.effective_rank < 0.1 * 256


def test_chunking_does_not_change_results():
    from inrdiag.spectra import gram_spectra

    model = tiny_model()
    g1, a1 = gram_spectra(model, (17, 13), chunk=7)
    g2, a2 = gram_spectra(model, (17, 13), chunk=10_000)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))


def test_3d_grid_default_and_float32_model():
    model = tiny_model(in_features=3, dtype=torch.float32)
    rep = rank_report(model, grid=6, device="cpu")
    assert rep.grid_shape == [6, 6, 6] and rep.points == 216
