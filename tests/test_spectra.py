"""Spectra and stable ranks against numpy's SVD in float64, on every supported architecture, for float64
models and for float32 ones (what models really run in: the reference is then the SVD, in float64, of the
features the float32 network computes in float32)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_model
from tolerances import assert_close, tol

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


def numpy_reference(model, n, dtype=np.float64):
    """Z_k of every hidden layer by an explicit numpy forward pass in ``dtype`` (the model's weights and the
    grid rounded to it), independent of inrdiag's forward."""
    x = make_grid((n, n)).numpy().astype(dtype)
    pi = dtype(np.pi)
    spec = model.spec
    if spec.encoding == "fourier":
        B = model.encoding.B.numpy().astype(dtype)
        a = np.concatenate([np.sin(2 * pi * x @ B.T), np.cos(2 * pi * x @ B.T)], axis=1)
    elif spec.encoding == "positional":
        parts = [x]
        for k in range(spec.frequencies):
            f = dtype(2.0**k) * pi
            parts += [np.sin(f * x), np.cos(f * x)]
        a = np.concatenate(parts, axis=1)
    else:
        a = x
    zs = []

    def arr(t):
        return t.detach().numpy().astype(dtype)

    for k, lin in enumerate(model.linears[:-1]):
        h = a @ arr(lin.weight).T + arr(lin.bias)
        if str(k) in model.norms:
            bn = model.norms[str(k)]
            h = (h - arr(bn.running_mean)) / np.sqrt(arr(bn.running_var) + dtype(bn.eps)) * arr(bn.weight) + arr(
                bn.bias
            )
        w0 = dtype(spec.w0 if k == 0 else spec.w0_hidden)
        a = {
            "relu": lambda h: np.maximum(h, 0),
            "sine": lambda h: np.sin(w0 * h),
            "finer": lambda h: np.sin(w0 * (np.abs(h) + dtype(1)) * h),
            "gauss": lambda h: np.exp(-((w0 * h) ** 2)),
            "tanh": np.tanh,
        }[spec.activation](h)
        assert a.dtype == dtype
        zs.append(a)
    return zs


DTYPES = {torch.float64: np.float64, torch.float32: np.float32}


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(f"{v}" for v in a.values()))
def test_rank_report_matches_numpy_svd(arch, dtype):
    """Every singular value of every hidden layer against numpy's SVD (float64) of the layer's features as
    the ``dtype`` network computes them; rank statistics from the same reference."""
    model = tiny_model(**arch, dtype=dtype)
    n = 20
    rep = rank_report(model, grid=n, device="cpu")
    zs = numpy_reference(model, n, DTYPES[dtype])
    assert rep.points == n * n and rep.grid_shape == [n, n]
    assert len(zs) == len(model.linears) - 1 >= 3
    t = tol(dtype, "gram")
    for k, z in enumerate(zs):
        s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
        r = rep.layers[k].representation
        got = np.array(r.singular_values)
        assert got.shape == s.shape == (min(n * n, z.shape[1]),)
        # All singular values, near-zero ones judged against s_1 (the Gram route's floor, see tolerances.py).
        assert_close(got, s, dtype, "gram", scale=float(s[0]))
        p = s / s.sum()
        p = p[p > 0]
        # Each singular value may be off by atol * s_1, so each p_i by <= atol, and its term p log p of the
        # entropy by <= atol (1 + |log atol|): the effective rank's bound, to first order.
        entropy_tol = t.rtol + len(s) * t.atol * (1 - math.log(t.atol))
        assert math.isclose(r.effective_rank, math.exp(-(p * np.log(p)).sum()), rel_tol=entropy_tol)
        threshold = 1e-3 * s[0]  # the rank_report's default tol
        if not np.any(np.abs(s - threshold) <= t.atol * s[0] + t.rtol * threshold):  # no value at the threshold
            assert r.numerical_rank == int((s > threshold).sum())
        assert math.isclose(r.stable_rank, (s**2).sum() / s[0] ** 2, rel_tol=t.rtol)
        assert r.max_rank == min(n * n, z.shape[1])
        if arch["activation"] == "relu":
            assert r.dead_units == int((np.abs(z).max(axis=0) == 0).sum())
        else:
            assert r.dead_units is None
    for layer, lin in zip(rep.layers, model.linears):
        w = lin.weight.detach().double().numpy()  # the weights themselves: float32 ones are exact in float64
        s = np.linalg.svd(w, compute_uv=False)
        assert math.isclose(layer.weight_stable_rank, (s**2).sum() / s[0] ** 2, rel_tol=tol(torch.float64, "eig").rtol)
    assert rep.layers[-1].representation is None


@pytest.mark.parametrize("width", [100, 64, 200])
def test_blocked_gram_matches_numpy_svd(width):
    """Widths above, at and off the Gram's column block (GRAM_BLOCK): the lower-block-triangle Gram, mirrored,
    is Z^T Z (both triangles) and gives every singular value numpy's SVD gives."""
    from inrdiag.spectra import GRAM_BLOCK, gram_spectra

    assert GRAM_BLOCK < 100
    model = tiny_model(hidden=(width, width + 3), dtype=torch.float64)
    n = 24
    rep = rank_report(model, grid=n, device="cpu")
    grams, _ = gram_spectra(model, (n, n), chunk=100)
    for k, z in enumerate(numpy_reference(model, n)):
        ztz = z.T @ z
        assert_close(grams[k].numpy(), ztz, torch.float64, "gram", scale=float(np.abs(ztz).max()))
        s = np.linalg.svd(z, compute_uv=False)
        assert_close(np.array(rep.layers[k].representation.singular_values), s, torch.float64, "gram",
                     scale=float(s[0]))  # fmt: skip


def test_spectrum_stats_known_values():
    # Equal singular values: every rank equals the count.
    st = spectrum_stats([2.0, 2.0, 2.0, 2.0], max_rank=4)
    assert st.numerical_rank == 4 and math.isclose(st.effective_rank, 4.0) and math.isclose(st.stable_rank, 4.0)
    st = spectrum_stats([1.0, 1e-4, 0.0], max_rank=3)
    assert st.numerical_rank == 1 and st.stable_rank == pytest.approx(1.0 + 1e-8, rel=tol(torch.float64).rtol)
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
        assert_close(x, y, torch.float64, "exact")
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))


def test_3d_grid_default_and_float32_model():
    model = tiny_model(in_features=3, dtype=torch.float32)
    rep = rank_report(model, grid=6, device="cpu")
    assert rep.grid_shape == [6, 6, 6] and rep.points == 216
