"""The layer-wise NTK against a plain torch.func Jacobian contraction, in float64, on every architecture."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from torch.func import functional_call, jacrev, vmap

from inrdiag import make_grid
from inrdiag.errors import InrdiagError
from inrdiag.ntk.eigen import topk_eigh
from inrdiag.ntk.factors import all_factors, kernel_sum, matmul_sum
from inrdiag.ntk.kernel import ntk_report

ARCHS = {
    "relu": dict(activation="relu"),
    "positional": dict(activation="relu", encoding="positional", frequencies=3),
    "fourier": dict(activation="relu", encoding="fourier", fourier_features=8),
    "siren": dict(activation="sine", w0=30.0, w0_hidden=30.0),
    "batchnorm": dict(activation="relu", batchnorm=[0, 1]),
    "rgb": dict(activation="tanh", out_features=3),
    "rgb-siren-bn": dict(activation="sine", w0=10.0, w0_hidden=10.0, out_features=3, batchnorm=[1]),
    "no-bias": dict(activation="gelu", bias=False),
}


def reference_ntk(model, x):
    """Plain torch.func: J = vmap(jacrev(f)) over samples, then sum_c J_c J_c^T over all parameters."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(p, x1):
        return functional_call(model, {**p, **buffers}, (x1[None],))[0]

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    J = torch.cat([j.reshape(x.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)
    return torch.einsum("ncp,mcp->nm", J, J)


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_factorised_kernel_matches_jacobian_contraction(arch):
    model = tiny_model(**ARCHS[arch])
    x = make_grid((9, 9))
    ref = reference_ntk(model, x)
    factors = all_factors(model, x)
    assert rel(kernel_sum(factors), ref) <= 1e-10
    # Every trainable parameter is in exactly one group.
    assert sum(f.parameters for f in factors) == sum(p.numel() for p in model.parameters())
    # Chunked (7 rows at a time, generic path included) equals batched.
    chunked = kernel_sum(all_factors(model, x, chunk=7))
    assert rel(chunked, kernel_sum(factors)) <= 1e-12
    # Matrix-free block product (with and without dropping dead columns) == exact matrix product.
    V = torch.randn(x.shape[0], 5, dtype=torch.float64)
    exact = ref @ V
    assert rel(matmul_sum(factors, V), exact) <= 1e-10
    assert rel(matmul_sum([f.compressed() for f in factors], V), exact) <= 1e-10
    # Per-group traces from the diagonal formula.
    for f in factors:
        assert abs(float(f.diag().sum()) - float(torch.trace(f.kernel()))) <= 1e-10 * float(torch.trace(ref))


@pytest.mark.parametrize("arch", ["relu", "siren", "rgb-siren-bn"])
@pytest.mark.parametrize("block", [1, 4])
def test_matrix_free_topk_matches_eigvalsh(arch, block):
    model = tiny_model(hidden=(24, 24), **ARCHS[arch])
    x = make_grid((14, 14))
    factors = all_factors(model, x)
    exact = torch.linalg.eigvalsh(reference_ntk(model, x)).flip(0)
    k = 12
    res = topk_eigh(lambda V: matmul_sum(factors, V), x.shape[0], k, block=block, tol=1e-9)
    assert res.converged and max(res.relative_residuals) <= 1e-9
    assert float(((res.values - exact[:k]).abs() / exact[:k]).max()) <= 1e-6
    # Returned vectors are orthonormal eigenvectors.
    assert float((res.vectors.T @ res.vectors - torch.eye(k, dtype=torch.float64)).abs().max()) <= 1e-10


def test_report_exact_vs_lanczos_and_group_spectra():
    model = tiny_model(batchnorm=[0], out_features=3)
    ex = ntk_report(model, grid=12, method="exact", top_k=10, device="cpu", dtype="float64")
    lz = ntk_report(model, grid=12, method="lanczos", top_k=10, device="cpu", dtype="float64")
    x = make_grid((12, 12))
    ref = reference_ntk(model, x)
    ev = torch.linalg.eigvalsh(ref).flip(0)
    assert ex.points == lz.points == 144 and len(ex.eigenvalues) == 144 and len(lz.eigenvalues) == 10
    assert max(abs(a - b) / b for a, b in zip(lz.eigenvalues, ev[:10].tolist())) <= 1e-6
    assert max(abs(a - b) / b for a, b in zip(ex.eigenvalues[:10], ev[:10].tolist())) <= 1e-10
    assert abs(ex.trace - float(torch.trace(ref))) <= 1e-10 * ex.trace
    assert abs(sum(g.trace_share for g in ex.groups) - 1) <= 1e-12
    assert [g.name for g in ex.groups][-1] == "norms.0" and ex.groups[-1].kind == "generic"
    for g_ex, g_lz in zip(ex.groups, lz.groups):
        assert abs(g_ex.trace_share - g_lz.trace_share) <= 1e-12
        assert abs(g_ex.top_eigenvalue - g_lz.top_eigenvalue) <= 1e-6 * g_ex.top_eigenvalue
    # Group spectra from the Khatri-Rao Gram equal eigvalsh of the N x N group kernel.
    f0 = all_factors(model.double(), x)[0]
    direct = torch.linalg.eigvalsh(f0.kernel()).flip(0)[:5]
    assert torch.allclose(torch.tensor(ex.groups[0].eigenvalues[:5], dtype=torch.float64), direct, rtol=1e-9)
    assert any("eval mode" in n for n in ex.notes)


def test_subset_points_are_seeded_and_from_the_grid():
    model = tiny_model()
    kw = dict(method="exact", top_k=5, dtype="float64")
    a = ntk_report(model, grid=10, points=30, seed=3, **kw)
    b = ntk_report(model, grid=10, points=30, seed=3, **kw)
    c = ntk_report(model, grid=10, points=30, seed=4, **kw)
    assert a.subset and a.points == 30 and a.eigenvalues == b.eigenvalues and a.eigenvalues != c.eigenvalues
    assert torch.equal(a.coords, make_grid((10, 10))[a.indices])
    ref = reference_ntk(model, a.coords)
    assert abs(a.eigenvalues[0] - float(torch.linalg.eigvalsh(ref)[-1])) <= 1e-10 * a.eigenvalues[0]


def test_float32_close_to_float64():
    model = tiny_model()
    r64 = ntk_report(model, grid=10, method="exact", top_k=5, dtype="float64")
    r32 = ntk_report(model, grid=10, method="exact", top_k=5, dtype="float32")
    assert abs(r32.eigenvalues[0] - r64.eigenvalues[0]) <= 1e-5 * r64.eigenvalues[0]


@pytest.mark.parametrize("kw,msg", [
    (dict(top_k=1000), "--top-k"),
    (dict(points=10_000), "--points"),
    (dict(method="svd"), "--method"),
    (dict(dtype="float16"), "--dtype"),
    (dict(grid=1), "--grid"),
    (dict(grid=100_000, method="exact"), "GiB"),
])  # fmt: skip
def test_bad_requests(kw, msg):
    with pytest.raises(InrdiagError, match=msg):
        ntk_report(tiny_model(), **{"grid": 10, **kw})


def test_nan_output_is_an_error():
    model = tiny_model()
    with torch.no_grad():
        model.linears[1].bias[0] = float("nan")
    with pytest.raises(InrdiagError, match="not finite"):
        ntk_report(model, grid=6)


def test_alignment_and_linearised_prediction():
    from inrdiag.ntk.target import alignment, target_ntk

    model = tiny_model(hidden=(32, 32))
    rep = ntk_report(model, grid=10, method="exact", top_k=100, vectors=True)
    x = rep.coords
    y = (torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:]) + 1) / 2
    al = dict(alignment(rep.vectors, y))
    assert al[100] == pytest.approx(1.0, abs=1e-10) and 0 <= al[1] <= al[10] <= al[100]
    lr = 0.2 * x.shape[0] / rep.eigenvalues[0]  # eta lambda_1 / N = 0.2: well inside the linear regime
    res = target_ntk(rep, model, y, lr=lr, steps=30, fit=True)
    assert res.residual_outside == pytest.approx(0.0, abs=1e-10)
    # Measured GD on the real (width-32) network follows the linearised prediction: exactly at the
    # first step to first order, within a few tenths of a dB after 30 steps as the kernel drifts.
    assert res.steps[:2] == [0, 1]
    assert abs(res.predicted_psnr[1] - res.measured_psnr[1]) <= 0.02
    for p, m in zip(res.predicted_psnr, res.measured_psnr):
        assert abs(p - m) <= 0.5, (res.predicted_psnr, res.measured_psnr)
    assert res.predicted_psnr[0] == pytest.approx(res.measured_psnr[0], abs=1e-9)


def test_lowrank_factor_bound_holds():
    """The compressed kernel is within the reported spectral-norm bound, which is within budget."""
    from inrdiag.ntk.factors import Factor

    g = torch.Generator().manual_seed(3)
    n, pa, pd = 300, 24, 20
    decay_a = torch.logspace(0, -6, pa, dtype=torch.float64)
    decay_d = torch.logspace(0, -5, pd, dtype=torch.float64)
    A = torch.randn(n, pa, generator=g, dtype=torch.float64) @ torch.diag(decay_a)
    D = torch.randn(n, pd, generator=g, dtype=torch.float64) @ torch.diag(decay_d)
    f = Factor(0, "x", "linear", A, D, 0)
    K = f.kernel()
    for budget in (1e-8, 1e-4, 1e-1):
        small, bound = f.lowrank(budget)
        err = float(torch.linalg.matrix_norm(K - small.kernel(), ord=2))
        assert err <= bound * (1 + 1e-9) + 1e-12 and bound <= budget
        assert small.feature_dim < f.feature_dim
    assert f.lowrank(0.0) == (f, 0.0)


def test_lanczos_with_compressed_products():
    """float32 Lanczos on compressed factors: same eigenvalues as without, within the stated bound."""
    model = tiny_model(hidden=(32, 32, 32))
    kw = dict(grid=16, method="lanczos", top_k=8, device="cpu", dtype="float32")
    on = ntk_report(model, **kw)
    off = ntk_report(model, lowrank=False, **kw)
    bound = on.accuracy["compression_bound"]
    assert off.accuracy["compression_bound"] == 0.0
    assert 0.0 <= bound <= 0.5 * 1e-3 * on.eigenvalues[-1]
    for a, b in zip(on.eigenvalues, off.eigenvalues):
        assert abs(a - b) <= bound + 2e-3 * b
    ex = ntk_report(model, grid=16, method="exact", top_k=8, device="cpu", dtype="float64")
    for a, b in zip(on.eigenvalues, ex.eigenvalues[:8]):
        assert abs(a - b) / b <= on.accuracy["max_relative_error_bound"] + 1e-5


def test_effective_rank_bounds_contain_the_truth():
    """Upper bound from interlacing alone (any theta_i <= lambda_i); lower bound with the residual caps."""
    import math

    from inrdiag.ntk.eigen import effective_rank_bounds

    g = torch.Generator().manual_seed(1)
    n = 400
    lam = torch.logspace(0, -9, n, dtype=torch.float64) * (1 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64))
    lam = lam.sort(descending=True).values
    p = lam / lam.sum()
    truth = math.exp(float(-(p * p.log()).sum()))
    T = float(lam.sum())
    for m in (5, 40, 120):
        lo, hi = effective_rank_bounds(lam[:m].tolist(), n, T, [0.0] * m)
        assert lo <= truth * (1 + 1e-12) and truth <= hi * (1 + 1e-12)
        # Ritz values below the eigenvalues (interlacing) and radii covering the gap: still valid.
        th = (lam[:m] * (1 - 1e-3)).tolist()
        lo2, hi2 = effective_rank_bounds(th, n, T, (lam[:m] * 2e-3).tolist())
        assert lo2 <= truth * (1 + 1e-12) <= hi2 * (1 + 1e-12) and hi2 - lo2 >= hi - lo - 1e-12
        lo3, hi3 = effective_rank_bounds(th, n, T)  # no radii: excess on lambda_1, still a lower bound
        assert lo3 <= truth <= hi3
    lo, hi = effective_rank_bounds(lam.tolist(), n, T, [0.0] * n)
    assert lo == pytest.approx(truth, rel=1e-12) and hi == pytest.approx(truth, rel=1e-12)


def test_auto_precision_exact_against_float64():
    """--dtype auto (float32 kernels, float64 eigvalsh for Theta, block Krylov for the big groups)
    against the float64 reference: eigenvalues to 1e-5 lambda_1, ranks inside their stated bounds."""
    from inrdiag.spectra import spectrum_stats

    model = tiny_model(hidden=(48, 48, 48))
    kw = dict(grid=24, method="exact", top_k=16, device="cpu")
    ref = ntk_report(model, dtype="float64", **kw)
    auto = ntk_report(model, dtype="auto", **kw)
    assert auto.dtype == "float32" and auto.dtype_requested == "auto" and ref.dtype_requested == "float64"
    assert "float32" in auto.precision and any("precision (--dtype auto)" in n for n in auto.notes)
    n = auto.points
    lam1 = ref.eigenvalues[0]
    assert len(auto.eigenvalues) == n
    assert max(abs(a - b) for a, b in zip(auto.eigenvalues, ref.eigenvalues)) <= 1e-5 * lam1
    assert auto.numerical_rank == ref.numerical_rank
    assert abs(auto.effective_rank - ref.effective_rank) <= 1e-4 * ref.effective_rank
    assert auto.accuracy["solver"] == "eigvalsh (LAPACK, float64)" and "float32 GEMMs" in auto.accuracy["kernels"]
    krylov = [g for g in auto.groups if g.spectrum == "krylov"]
    assert krylov and auto.accuracy["groups"]["krylov_dims"]
    for g, r in zip(auto.groups, ref.groups):
        assert g.name == r.name and abs(g.trace_share - r.trace_share) <= 1e-6
        assert abs(g.top_eigenvalue - r.top_eigenvalue) <= 1e-5 * r.top_eigenvalue
        if g.spectrum != "krylov":
            continue
        lo, hi = g.effective_rank_bounds
        truth = spectrum_stats(r.eigenvalues, r.max_rank, auto.tol).effective_rank
        assert lo * (1 - 1e-5) <= truth <= hi * (1 + 1e-5) and hi - lo <= 0.01 * lo + 1e-12
        nlo, nhi = g.numerical_rank_bounds
        assert nlo <= r.numerical_rank <= nhi
        if nlo == nhi:
            assert g.numerical_rank == r.numerical_rank
    d = auto.to_dict()
    assert d["dtype"] == "float32" and d["dtype_requested"] == "auto" and d["precision"] == auto.precision
    assert all({"spectrum", "effective_rank_bounds", "numerical_rank_bounds"} <= set(g) for g in d["layers"])


def test_auto_precision_lanczos_within_its_bound():
    model = tiny_model(hidden=(32, 32, 32))
    kw = dict(grid=16, method="lanczos", top_k=8, device="cpu", dtype="auto")
    auto = ntk_report(model, **kw)
    ex = ntk_report(model, grid=16, method="exact", top_k=8, device="cpu", dtype="float64")
    assert auto.dtype == "float32" and "float64 Lanczos basis" in auto.precision
    assert "float32 products, float64 basis" in auto.accuracy["solver"] and auto.accuracy["converged"]
    bound = auto.accuracy["max_relative_error_bound"]
    assert bound <= 2e-3
    for a, b in zip(auto.eigenvalues, ex.eigenvalues[:8]):
        assert abs(a - b) / b <= bound + 1e-5
    for g, r in zip(auto.groups, ex.groups):
        assert abs(g.top_eigenvalue - r.top_eigenvalue) <= 2e-3 * r.top_eigenvalue
