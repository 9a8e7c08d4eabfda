"""The layer-wise NTK against a plain torch.func Jacobian contraction on every architecture, in float64 and
(its twin) float32, per group and in total, kernels and eigenvalues; the solvers and their stated bounds."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import tiny_model
from tolerances import assert_close, tol
from torch.func import functional_call, jacrev, vmap

from inrdiag import make_grid
from inrdiag.errors import InrdiagError
from inrdiag.ntk.config import DEFAULT_TOP_K, KRYLOV_MIN_POINTS, NTKConfig
from inrdiag.ntk.eigen import Bounds, effective_rank_bounds, krylov_spectrum, topk_eigh
from inrdiag.ntk.factors import Factor, kernel_sum, layer_factors, matmul_sum
from inrdiag.ntk.kernel import ntk_report
from inrdiag.ntk.points import ntk_points
from inrdiag.spectra import spectrum_stats

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
DTYPES = [torch.float64, torch.float32]


def jacobian(model, x, names=None):
    """Plain torch.func: J = vmap(jacrev(f)) over samples (N x C x P), w.r.t. ``names`` (default: all)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    wrt = {k: v for k, v in params.items() if names is None or k in names}
    fixed = {**{k: v for k, v in params.items() if k not in wrt}, **dict(model.named_buffers())}

    def f(p, x1):
        return functional_call(model, {**fixed, **p}, (x1[None],))[0]

    jac = vmap(jacrev(f), in_dims=(None, 0))(wrt, x)
    return torch.cat([j.reshape(x.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)


def reference_ntk(model, x, names=None, dtype=torch.float64):
    """``sum_c J_c J_c^T`` over all parameters (or the group ``names``): the Jacobian of the model's weights
    evaluated in ``dtype`` (float32: the float32 twin's reference, the same mathematics in another order),
    the contraction in float64."""
    model = copy.deepcopy(model).to(dtype)
    J = jacobian(model, x.to(dtype), names).double()
    return torch.einsum("ncp,mcp->nm", J, J)


def group_params(model, factor_name: str) -> list[str]:
    """Parameter names of the group a factor stands for (a linear layer's module path, or a generic group)."""
    return [k for k, _ in model.named_parameters() if k.rsplit(".", 1)[0] == factor_name]


def eigvals_desc(K):
    return torch.linalg.eigvalsh(K.double()).flip(0)


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_factorised_kernel_matches_jacobian_contraction(arch, dtype):
    """Theta and every Theta_g from the factors equal J J^T of an independent torch.func Jacobian (float64
    reference), in float64 and in float32 (the twin): kernels entrywise, eigenvalues (all of them) too."""
    model = tiny_model(**ARCHS[arch]).to(dtype)
    x = make_grid((9, 9), dtype=dtype)
    ref = reference_ntk(model, x, dtype=dtype)
    factors = layer_factors(model, x)
    total = kernel_sum(factors)
    assert total.dtype == dtype
    assert_close(total, ref, dtype)
    assert_close(eigvals_desc(total), eigvals_desc(ref), dtype, "eig")
    # Every trainable parameter is in exactly one group, and each group's kernel is its own J_g J_g^T.
    assert sum(f.parameters for f in factors) == sum(p.numel() for p in model.parameters())
    for f in factors:
        ref_g = reference_ntk(model, x, group_params(model, f.name), dtype)
        assert_close(f.kernel(), ref_g, dtype, scale=float(ref.abs().max()))
        assert_close(eigvals_desc(f.kernel()), eigvals_desc(ref_g), dtype, "eig")
        # Per-group traces from the diagonal formula.
        assert_close(f.diag().sum(), torch.trace(ref_g), dtype, scale=float(torch.trace(ref)))
    # Chunked (7 rows at a time, generic path included) equals batched.
    assert_close(kernel_sum(layer_factors(model, x, chunk=7)), total, dtype)
    # Matrix-free block product (with and without dropping dead columns) == exact matrix product.
    V = torch.randn(x.shape[0], 5, dtype=torch.float64)
    exact = ref @ V
    Vd = V.to(dtype)
    assert_close(matmul_sum(factors, Vd), exact, dtype)
    assert_close(matmul_sum([f.compressed() for f in factors], Vd), exact, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("arch", ["relu", "siren", "rgb-siren-bn"])
@pytest.mark.parametrize("block", [1, 4])
def test_matrix_free_topk_matches_eigvalsh(arch, block, dtype):
    model = tiny_model(hidden=(24, 24), **ARCHS[arch]).to(dtype)
    x = make_grid((14, 14), dtype=dtype)
    factors = layer_factors(model, x)
    exact = eigvals_desc(reference_ntk(model, x, dtype=dtype))
    k = 12
    stop = 1e-9 if dtype == torch.float64 else 1e-3
    res = topk_eigh(lambda V: matmul_sum(factors, V), x.shape[0], k, block=block, tol=stop, compute_dtype=dtype)
    assert res.converged and max(res.relative_residuals) <= stop
    assert_close(res.values, exact[:k], dtype, "iterative")
    # Returned vectors are orthonormal eigenvectors (the basis is float64 in both cases).
    assert float((res.vectors.T @ res.vectors - torch.eye(k, dtype=torch.float64)).abs().max()) <= 1e-10


def test_topk_tracks_parts_and_warm_starts():
    """Summands given as parts: the sum's top-k, and each tracked part's top Ritz pair with an explicit residual."""
    g = torch.Generator().manual_seed(0)
    n = 300
    mats = []
    for decay in (0.5, 0.8):
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        mats.append(Q @ torch.diag(decay ** torch.arange(n, dtype=torch.float64)) @ Q.T)
    total = mats[0] + mats[1]
    res = topk_eigh(None, n, 6, parts=[M.matmul for M in mats], track=[1], block=3, tol=1e-10)
    assert_close(res.values, eigvals_desc(total)[:6], torch.float64, "iterative")
    part = res.parts[1]
    u = part.vector
    true_r = float((mats[1] @ u - part.value * u).norm()) / part.value
    assert true_r == pytest.approx(part.relative_residual, rel=1e-6, abs=1e-12)
    assert part.value <= float(eigvals_desc(mats[1])[0]) * (1 + 1e-12)  # a Ritz value: below lambda_1
    # a basis of at most 12 vectors: thick restarts (which rotate the stored products of the tracked part too)
    small = topk_eigh(None, n, 6, parts=[M.matmul for M in mats], track=[1], block=3, tol=1e-10, max_basis=12)
    assert small.converged and small.products > res.products  # restarts cost products: they happened
    assert_close(small.values, eigvals_desc(total)[:6], torch.float64, "iterative")
    sp = small.parts[1]
    assert float((mats[1] @ sp.vector - sp.value * sp.vector).norm()) / sp.value == pytest.approx(
        sp.relative_residual, rel=1e-6, abs=1e-12
    )
    warm = topk_eigh(mats[1].matmul, n, 1, block=1, tol=1e-10, start=u[:, None])
    cold = topk_eigh(mats[1].matmul, n, 1, block=1, tol=1e-10)
    assert warm.converged and warm.products <= cold.products
    assert_close(warm.values, eigvals_desc(mats[1])[:1], torch.float64, "iterative")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_krylov_spectrum_bounds_contain_the_truth(dtype):
    """Ritz values, explicit radii, effective-rank and numerical-rank bounds against eigvalsh, with float64
    and float32 products."""
    g = torch.Generator().manual_seed(2)
    n = 1200
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.logspace(0, -8, n, dtype=torch.float64) ** 1.5
    K = (Q * lam) @ Q.T
    K = 0.5 * (K + K.T)
    Kc = K.to(dtype)
    ps = krylov_spectrum(Kc.matmul, n, float(lam.sum()), tol=1e-3, width=0.01, dim=128, min_converged=40,
                         compute_dtype=dtype)  # fmt: skip
    assert ps.converged and len(ps.converged_values) >= 40
    truth = spectrum_stats(lam.tolist(), n, 1e-3)
    eff = ps.effective_rank_bounds
    assert eff.lower * (1 - 1e-6) <= truth.effective_rank <= eff.upper * (1 + 1e-6)
    assert ps.numerical_rank_bounds.lower <= truth.numerical_rank <= ps.numerical_rank_bounds.upper
    assert_close(ps.values[:10], lam[:10], dtype, "iterative")
    # every converged value within its radius below the eigenvalue (interlacing up to the products' rounding)
    slack = tol(dtype, "eig").atol * float(lam[0])
    for v, r, t in zip(ps.converged_values, ps.radii, lam.tolist()):
        assert v - slack <= t <= v + r + slack


def test_krylov_spectrum_gives_up_early_on_a_flat_spectrum():
    """A flat spectrum (a SIREN's kernel) cannot be pinned by N/4: the checks stop the space early (then the
    caller runs a dense eigvalsh) instead of growing it to max_dim; a decaying one still converges."""
    g = torch.Generator().manual_seed(4)
    n = 1600
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    flat = torch.linspace(1.0, 0.05, n, dtype=torch.float64)
    K = (Q * flat) @ Q.T
    kw = dict(tol=1e-3, width=0.01, dim=128, max_dim=n // 4)
    early = krylov_spectrum(K.matmul, n, float(flat.sum()), **kw)
    full = krylov_spectrum(K.matmul, n, float(flat.sum()), give_up=False, **kw)
    assert not early.converged and not full.converged
    assert early.dim < n // 4 == full.dim
    decay = torch.logspace(0, -30, n, dtype=torch.float64)  # numerical rank 160 at tol 1e-3: pinned by N/4
    ok = krylov_spectrum(((Q * decay) @ Q.T).matmul, n, float(decay.sum()), **kw)
    assert ok.converged and ok.dim < n // 4


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lanczos_relation_residuals_equal_explicit_ones(dtype):
    """The residual norms the Lanczos relation W - Q H = R S^T gives (what the solvers use, at no N x m cost)
    equal ||W y - theta Q y|| from the stored products, through block steps and a thick restart."""
    from inrdiag.ntk.eigen import _BlockKrylov

    g = torch.Generator().manual_seed(5)
    n = 400
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    K = ((Q * torch.logspace(0, -7, n, dtype=torch.float64)) @ Q.T).to(dtype)
    kr = _BlockKrylov(K.matmul, (), (), n, 200, torch.float64, dtype, None, torch.Generator().manual_seed(0))
    for step in range(12):
        kr.extend(8)
        if step == 6:
            theta, Y = kr.ritz()
            kr.restart(Y[:, :20], theta[:20])
        theta, Y = kr.ritz()
        est = kr.residual_norms(Y)
        _, exp = kr.explicit(Y, theta)
        # float64 products: to rounding; float32 ones: the relation assumes X^T W = (Q^T W_X)^T, true to float32
        # rounding of the products (measured ~5e-9 lambda_1), the same order as the products' own error
        assert_close(est, exp, dtype, "eig", scale=float(theta[0]))


def test_report_exact_vs_lanczos_and_group_spectra():
    model = tiny_model(batchnorm=[0], out_features=3)
    ex = ntk_report(model, grid=12, method="exact", top_k=10, device="cpu", dtype="float64")
    lz = ntk_report(model, grid=12, method="lanczos", top_k=10, device="cpu", dtype="float64")
    x = make_grid((12, 12))
    ref = reference_ntk(model, x)
    ev = eigvals_desc(ref)
    assert ex.points == lz.points == 144 and len(ex.eigenvalues) == 144 and len(lz.eigenvalues) == 10
    assert_close(lz.eigenvalues, ev[:10], torch.float64, "iterative")
    assert_close(ex.eigenvalues, ev.clamp_min(0), torch.float64, "eig")
    assert abs(ex.trace - float(torch.trace(ref))) <= 1e-10 * ex.trace
    assert abs(sum(g.trace_share for g in ex.groups) - 1) <= 1e-12
    assert [g.name for g in ex.groups][-1] == "norms.0" and ex.groups[-1].kind == "generic"
    for g_ex, g_lz in zip(ex.groups, lz.groups):
        assert abs(g_ex.trace_share - g_lz.trace_share) <= 1e-12
        assert abs(g_ex.top_eigenvalue - g_lz.top_eigenvalue) <= 1e-6 * g_ex.top_eigenvalue
    # Group spectra from the Khatri-Rao Gram equal eigvalsh of the N x N group kernel.
    f0 = layer_factors(model.double(), x)[0]
    direct = eigvals_desc(f0.kernel())[:5]
    assert_close(ex.groups[0].eigenvalues[:5], direct, torch.float64, "eig")
    assert any("eval mode" in n for n in ex.notes)


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_report_float32_twin(method):
    """The report in float32 (kernels/products float32, eigensolves float64) against the float64 torch.func
    reference: Theta's eigenvalues (all N in exact mode) and every group's eigenvalues and traces."""
    model = tiny_model(hidden=(24, 24, 24), batchnorm=[1])
    kw = dict(grid=12, method=method, top_k=8, device="cpu")
    r32 = ntk_report(model, dtype="float32", **kw)
    assert r32.dtype == "float32"
    x = make_grid((12, 12))
    ref = reference_ntk(model, x, dtype=torch.float32)
    ev = eigvals_desc(ref).clamp_min(0)
    if method == "exact":
        assert_close(r32.eigenvalues, ev, torch.float32, "eig")
    else:
        assert_close(r32.eigenvalues, ev[:8], torch.float32, "iterative")
    for g in r32.groups:
        ref_g = reference_ntk(model, x, group_params(model, g.name), torch.float32)
        eg = eigvals_desc(ref_g).clamp_min(0)
        assert_close(g.trace, torch.trace(ref_g), torch.float32, scale=float(torch.trace(ref)))
        if g.eigenvalues is not None:
            got = torch.tensor(g.eigenvalues, dtype=torch.float64)
            assert_close(got, eg[: len(got)], torch.float32, "eig", scale=float(eg[0]))
        else:  # lanczos: the top eigenvalue only, within the residual tolerance plus its compression bound
            assert_close(g.top_eigenvalue, eg[0], torch.float32, "iterative")


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
    pts = ntk_points(2, 10, 30, seed=3)
    assert pts.shape == (10, 10) and pts.count == 30 and torch.equal(pts.indices, a.indices)


def test_config_and_options():
    """ntk_report(model, NTKConfig(...)) == ntk_report(model, **fields); unknown options refused."""
    model = tiny_model()
    cfg = NTKConfig(grid=8, top_k=4, method="exact")
    a = ntk_report(model, cfg)
    b = ntk_report(model, grid=8, top_k=4, method="exact")
    c = ntk_report(model, cfg, top_k=6)
    assert a.eigenvalues == b.eigenvalues and a.top_k == 4 and c.top_k == 6
    assert NTKConfig().top_k == DEFAULT_TOP_K and NTKConfig().dtype == "float64"
    with pytest.raises(TypeError, match="unknown NTK option"):
        ntk_report(model, grids=8)


@pytest.mark.parametrize("kw,msg", [
    (dict(top_k=1000), "--top-k"),
    (dict(top_k=0), "--top-k"),
    (dict(points=10_000), "--points"),
    (dict(method="svd"), "--method"),
    (dict(dtype="float16"), "--dtype"),
    (dict(grid=1), "--grid"),
    (dict(tol=0.0), "--tol"),
    (dict(seed=-1), "seed"),
    (dict(seed=2**32), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(grid=100_000, method="exact"), "GiB"),
])  # fmt: skip
def test_bad_requests(kw, msg):
    with pytest.raises(InrdiagError, match=msg):
        ntk_report(tiny_model(), **{"grid": 10, **kw})


def test_solver_seeds_are_range_checked():
    K = torch.eye(20, dtype=torch.float64)
    for bad in (-1, 2**32, 0.5, True):
        with pytest.raises(InrdiagError, match="seed"):
            topk_eigh(K.matmul, 20, 2, seed=bad)
        with pytest.raises(InrdiagError, match="seed"):
            krylov_spectrum(K.matmul, 20, 20.0, seed=bad)
        with pytest.raises(InrdiagError, match="seed"):
            ntk_points(2, 6, 5, seed=bad)


def test_nan_output_is_an_error():
    model = tiny_model()
    with torch.no_grad():
        model.linears[1].bias[0] = float("nan")
    with pytest.raises(InrdiagError, match="not finite"):
        ntk_report(model, grid=6)


def test_alignment_and_linearised_prediction():
    from inrdiag.ntk.target import alignment, default_lr, target_ntk

    model = tiny_model(hidden=(32, 32))
    rep = ntk_report(model, grid=10, method="exact", top_k=100, vectors=True)
    x = rep.coords
    y = (torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:]) + 1) / 2
    al = {a.k: a.fraction for a in alignment(rep.vectors, y)}
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
    # the default step: eta lambda_1 / (N C) = 1
    assert default_lr(rep, 1) == pytest.approx(x.shape[0] / rep.eigenvalues[0])
    assert target_ntk(rep, model, y).lr == default_lr(rep, 1)
    with pytest.raises(InrdiagError, match="vectors=True"):
        target_ntk(ntk_report(model, grid=6), model, y[:36])


def test_gram64_is_the_float64_gram_in_any_blocking():
    """Row chunks converted one at a time, column blocks of the lower triangle, mirrored: X^T X in float64."""
    from inrdiag.ntk.factors import gram64

    X = torch.randn(1000, 150, generator=torch.Generator().manual_seed(9))
    ref = X.double().T @ X.double()
    for block, chunk in ((64, 300), (128, 4096), (150, 1000), (7, 13)):
        torch.testing.assert_close(gram64(X, block, chunk), ref, rtol=1e-13, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize("pa,pd", [(24, 20), (24, 1), (1, 20), (40, 150)])
def test_lowrank_factor_bound_holds(pa, pd):
    """The compressed kernel is within the reported spectral-norm bound, which is within budget, and below
    the kernel (the dropped part is PSD); also when A or D is one column (a scalar head: X X^T, X cut)."""
    g = torch.Generator().manual_seed(3)
    n = 300
    decay_a = torch.logspace(0, -6, pa, dtype=torch.float64)
    decay_d = torch.logspace(0, -5, pd, dtype=torch.float64)
    A = torch.randn(n, pa, generator=g, dtype=torch.float64) @ torch.diag(decay_a)
    D = torch.randn(n, pd, generator=g, dtype=torch.float64) @ torch.diag(decay_d)
    f = Factor(index=0, name="x", kind="linear", A=A, D=D, parameters=0)
    K = f.kernel()
    V = torch.randn(n, 3, generator=g, dtype=torch.float64)
    for budget in (1e-8, 1e-4, 1e-1, 1e6):
        cut = f.lowrank(budget)
        Kc = cut.kernel()
        E = K - Kc
        err = float(torch.linalg.matrix_norm(E, ord=2))
        assert err <= cut.bound * (1 + 1e-9) + 1e-12 and cut.bound <= budget
        assert float(torch.linalg.eigvalsh(E)[0]) >= -1e-12 * float(K.norm())
        assert cut.feature_dim < f.feature_dim or (budget == 1e-8 and min(pa, pd) == 1)
        assert cut.parts and all(min(c.A.shape[1], c.D.shape[1]) >= 1 for c in cut.parts)  # never cut to nothing
        torch.testing.assert_close(cut.matmul(V), Kc @ V)  # the product of what the solve runs on
    same = f.lowrank(0.0)
    assert len(same.parts) == 1 and same.parts[0] is f and same.bound == 0.0


def test_staircase_row_statistics_bound_the_exact_sums():
    """The row statistics are summed in float32 with their rounding bounded: never below the exact sums (taken
    in float64 from the same float32 numbers, exact there to ~1e-16), and within 1e-4 of them (plus float32's
    smallest normals where squares underflow); also with values spanning many binades."""
    from inrdiag.ntk import lowrank as F

    g = torch.Generator().manual_seed(8)
    X = torch.randn(3000, 150, generator=g) * torch.logspace(0, -20, 150)[None, :]
    X[:, 7] = 1e-23 * torch.rand(3000, generator=g)  # squares far below float32's smallest normal
    X[::97, 3] *= 1e6
    X64 = X.double()
    edges = [0, 64, 128, 150]
    exact_tail = X64.flip(1).square().cumsum(1).max(0).values.flip(0)
    exact_group = torch.stack([X64[:, a:b].square().sum(1) for a, b in zip(edges[:-1], edges[1:])], 1).max(0).values
    for got, exact in (
        (F._tail_row_max(X, chunk=700), exact_tail),
        (F._group_row_max(X, edges, chunk=700), exact_group),
    ):
        assert got.dtype == torch.float64 and bool((got >= exact).all())
        assert bool((got - exact <= 1e-4 * exact + 200 * torch.finfo(torch.float32).tiny).all())  # underflow: absolute
    torch.testing.assert_close(F._tail_row_max(X64), exact_tail, rtol=1e-12, atol=0.0)  # float64 input: float64 sums


@pytest.mark.parametrize("n", [300, 301])
def test_thin_factor_product_split_in_two_equals_one_call(monkeypatch, n):
    """The first GEMM of a thin factor's product split in two halves (``THIN_SPLIT``) gives the kernel's product;
    with rows of 256 (the fewest a chunk takes) a chunk of 45 rows takes the single call."""
    from inrdiag.ntk import factors as F

    g = torch.Generator().manual_seed(4)
    f = Factor(index=0, name="x", kind="linear", A=torch.randn(n, 3, generator=g, dtype=torch.float64),
               D=torch.randn(n, 20, generator=g, dtype=torch.float64), parameters=0)  # fmt: skip
    V = torch.randn(n, 4, generator=g, dtype=torch.float64)
    assert 3 * 4 <= F.THIN_SPLIT
    split = f.matmul(V, chunk=100)
    monkeypatch.setattr(F, "THIN_SPLIT", 0)
    torch.testing.assert_close(split, f.matmul(V, chunk=100), rtol=1e-12, atol=1e-12 * float(split.abs().max()))
    torch.testing.assert_close(split, f.kernel() @ V, rtol=1e-12, atol=1e-12)


def test_lowrank_all_shares_one_budget():
    """Several factors cut within one budget: the bounds sum to at most it, the summed kernel is within their
    sum, and the shared cut keeps fewer columns than an even split when one factor cannot be cut (its share
    is spent elsewhere) and the others' spectra differ."""
    from inrdiag.ntk.lowrank import lowrank_all

    g = torch.Generator().manual_seed(11)
    n = 300

    def factor(pa, pd, da, dd):
        A = torch.randn(n, pa, generator=g, dtype=torch.float64) @ torch.diag(
            torch.logspace(0, da, pa, dtype=torch.float64)
        )
        D = torch.randn(n, pd, generator=g, dtype=torch.float64) @ torch.diag(
            torch.logspace(0, dd, pd, dtype=torch.float64)
        )
        return Factor(index=0, name="x", kind="linear", A=A, D=D, parameters=0)

    fs = [factor(3, 40, 0, -1), factor(40, 48, -6, -5), factor(32, 40, -2, -2), factor(24, 1, -4, 0)]
    K = sum(f.kernel() for f in fs)
    V = torch.randn(n, 2, generator=g, dtype=torch.float64)
    for budget in (1e-3, 1e-1, 10.0):
        cuts = lowrank_all(fs, budget)
        bound = sum(c.bound for c in cuts)
        assert bound <= budget and cuts[0].parts == [fs[0]] and cuts[0].bound == 0.0  # 3 columns: never cut
        Kc = sum(c.kernel() for c in cuts)
        assert float(torch.linalg.matrix_norm(K - Kc, ord=2)) <= bound * (1 + 1e-9) + 1e-12
        torch.testing.assert_close(sum(c.matmul(V) for c in cuts), Kc @ V)
        even = [f.lowrank(budget / len(fs)) for f in fs]
        assert sum(c.feature_dim for c in cuts) < sum(c.feature_dim for c in even), budget
    assert lowrank_all(fs, 0.0)[1].parts == [fs[1]] and lowrank_all([], 1.0) == []


def test_dead_columns_packed_in_place_and_cuts_rotated_in_place(monkeypatch):
    """``compressed(reuse=True)`` gives compressed()'s factor in the original's own memory (several row chunks,
    an odd row count, dead columns first, in the middle and last); ``lowrank_all(overwrite=True)`` makes the
    same cuts with the same bounds as on copies, rotating the factors in their own memory with their kernels
    kept."""
    from inrdiag.ntk import factors as F
    from inrdiag.ntk import lowrank as L

    monkeypatch.setattr(L, "CUT_GROUP", 8)  # staircase cuts of several parts
    g = torch.Generator().manual_seed(3)
    n = 2 * 1024 + 37  # three of _pack_columns' row chunks, the last one short

    def factor(pa, pd, dead_a, dead_d, da, dd):
        A = torch.randn(n, pa, generator=g, dtype=torch.float64) @ torch.diag(torch.logspace(0, da, pa).double())
        D = torch.randn(n, pd, generator=g, dtype=torch.float64) @ torch.diag(torch.logspace(0, dd, pd).double())
        A[:, dead_a], D[:, dead_d] = 0.0, 0.0
        return Factor(index=0, name="x", kind="linear", A=A, D=D, parameters=0)

    made = [factor(24, 20, [0, 7, 23], [5], -5, -4), factor(18, 1, [17], [], -4, 0), factor(12, 16, [], [], -3, -3)]
    fs = []
    for f in made:
        ref = f.compressed()
        ptrs = (f.A.data_ptr(), f.D.data_ptr())
        packed = f.compressed(reuse=True)  # f's A and D are spent from here
        assert torch.equal(packed.A, ref.A) and torch.equal(packed.D, ref.D)
        assert (packed.A.data_ptr(), packed.D.data_ptr()) == ptrs and packed.A.is_contiguous()
        fs.append(packed)
    assert F._pack_columns(torch.arange(12.0).view(3, 4).clone(), torch.tensor([1, 3])).tolist() == [
        [1.0, 3.0], [5.0, 7.0], [9.0, 11.0]]  # fmt: skip

    kernels = [f.kernel() for f in fs]
    budget = 1e-2 * sum(float(f.diag().sum()) for f in fs) / n
    copies = L.lowrank_all(fs, budget)
    own = [f.with_factors(f.A.clone(), f.D.clone()) for f in fs]
    ptrs = [(f.A.data_ptr(), f.D.data_ptr()) for f in own]
    inplace = L.lowrank_all(own, budget, overwrite=True)
    assert [c.bound for c in inplace] == [c.bound for c in copies] and 0 < sum(c.bound for c in copies) <= budget
    for f, o, a, b in zip(fs, own, copies, inplace):
        assert len(a.parts) == len(b.parts)
        for pa, pb in zip(a.parts, b.parts):
            if pa is f:  # not cut: the factor itself, rotated in the in-place run
                assert pb is o
            else:  # cut parts: the same rotated columns, bit for bit
                assert torch.equal(pa.A, pb.A) and torch.equal(pa.D, pb.D)
    assert [(f.A.data_ptr(), f.D.data_ptr()) for f in own] == ptrs
    assert all(c.parts[0] is not f for f, c in zip(fs, copies)) and max(len(c.parts) for c in copies) > 1  # all cut
    assert not torch.equal(own[0].A, fs[0].A)  # rotated where it lay
    for f, K in zip(own, kernels):
        torch.testing.assert_close(f.kernel(), K, rtol=1e-10, atol=1e-10 * float(K.abs().max()))


def test_lanczos_recut_on_factors_rotated_in_place(monkeypatch):
    """``lanczos_topk(overwrite=True)``: the second, tighter cut starts from the factors the first one rotated
    in place; the same eigenvalues and bound as on untouched factors, within the bound of eigvalsh of Theta."""
    from inrdiag.ntk import lowrank as L

    monkeypatch.setattr(L, "CUT_GROUP", 8)
    budgets: list[float] = []
    cut = L.lowrank_all
    monkeypatch.setattr(L, "lowrank_all", lambda fs, b, *a: budgets.append(b) or cut(fs, b, *a))
    model = tiny_model(hidden=(32, 32, 32))
    x = ntk_points(2, 16, None, 0, torch.float64, "cpu").coords
    made = layer_factors(model, x)
    theta = sum(f.kernel() for f in made)
    exact = torch.linalg.eigvalsh(theta).flip(0)[:16]
    runs = []
    for overwrite in (False, True):
        comp = [f.with_factors(f.A.clone(), f.D.clone()).compressed() for f in made]
        trace = sum(float(f.diag().sum()) for f in comp)
        budgets.clear()
        runs.append(L.lanczos_topk(comp, x.shape[0], 16, 1e-3, trace, "cpu", torch.float64, overwrite=overwrite))
        assert len(budgets) >= 2 and budgets[1] < budgets[0]  # recut tighter
    off, on = runs
    assert on.bound == pytest.approx(off.bound, rel=1e-6) and 0 < on.bound <= 0.5 * 1e-3 * float(on.topk.values[-1])
    torch.testing.assert_close(on.topk.values, off.topk.values, rtol=1e-6, atol=0)
    stated = torch.tensor(on.topk.relative_residuals, dtype=torch.float64) + on.bound / on.topk.values
    assert bool(((on.topk.values - exact).abs() / exact <= stated).all())


def test_lanczos_on_staircase_cuts_of_several_parts(monkeypatch):
    """The solver and the groups' refinement on cuts of several parts (groups of 8 columns, every hidden
    group through the Lanczos path): the eigenvalues of the exact float64 kernel within the stated bound."""
    from inrdiag.ntk import kernel as K
    from inrdiag.ntk import lowrank as F

    monkeypatch.setattr(F, "CUT_GROUP", 8)
    monkeypatch.setattr(K, "SMALL_GRAM", 100)
    model = tiny_model(hidden=(32, 32, 32))
    rep = ntk_report(model, grid=16, method="lanczos", top_k=8, device="cpu", dtype="float32")
    x = ntk_points(2, 16, None, 0, torch.float64, "cpu").coords
    comp = [f.compressed() for f in layer_factors(model, x)]
    trace = sum(float(f.diag().double().sum()) for f in comp)
    sol = K.lanczos_topk(comp, x.shape[0], 8, 1e-3, trace, "cpu", torch.float64, track=[1, 2, 3])
    assert max(len(c.parts) for c in sol.factors) > 1, [len(c.parts) for c in sol.factors]
    ex = ntk_report(model, grid=16, method="exact", top_k=8, device="cpu", dtype="float64")
    for a, b in zip(rep.eigenvalues, ex.eigenvalues[:8]):
        assert abs(a - b) / b <= rep.accuracy["max_relative_error_bound"] + 1e-5
    tops = {g.name: g.top_eigenvalue for g in rep.groups if g.spectrum == "top"}
    assert tops, "some groups took the Lanczos path"
    exact = {g.name: g.top_eigenvalue for g in ex.groups}
    for name, value in tops.items():  # within the compression bound of the group, plus the residual tolerance
        assert (
            value <= exact[name] * (1 + 1e-5) and value >= exact[name] * (1 - 2e-3) - rep.accuracy["compression_bound"]
        )


def test_staircase_cut_is_cheaper_than_the_rectangle_at_the_same_bound():
    """The rectangular cut (the top a directions of A for every direction of D kept, as ``lowrank`` did
    before) against the staircase at the bound the rectangle reaches: the staircase keeps fewer columns.
    Spectra decaying like a trained layer's (geometric), 4 groups of 16 columns."""
    from inrdiag.ntk import lowrank as F

    g = torch.Generator().manual_seed(5)
    n, pa, pd = 400, 48, 64
    A = torch.randn(n, pa, generator=g, dtype=torch.float64) @ torch.diag(
        torch.logspace(0, -4, pa, dtype=torch.float64)
    )
    D = torch.randn(n, pd, generator=g, dtype=torch.float64) @ torch.diag(
        torch.logspace(0, -4, pd, dtype=torch.float64)
    )
    f = Factor(index=0, name="x", kind="linear", A=A, D=D, parameters=0)
    K = f.kernel()
    wa, Va = F._rotated_basis(A)
    wd, Vd = F._rotated_basis(D)
    Ar, Dr = A @ Va, D @ Vd
    for a in (8, 16, 24):  # every D direction with A's top a: Schur's bound, as the rectangle's was
        rect = f.with_factors(Ar[:, :a], Dr)
        rect_bound = float(wa[a]) * float((Dr * Dr).sum(1).max())
        assert float(torch.linalg.matrix_norm(K - rect.kernel(), ord=2)) <= rect_bound * (1 + 1e-9)
        plan = F._staircase(Ar, wa, Dr, wd, rect_bound, group=16)
        assert plan.bound <= rect_bound and plan.cost < rect.feature_dim, (a, plan)
        cut = F.LowRank(parts=[f.with_factors(Ar[:, :k], Dr[:, s:e]) for k, s, e in plan.blocks], bound=plan.bound)
        assert float(torch.linalg.matrix_norm(K - cut.kernel(), ord=2)) <= plan.bound * (1 + 1e-9) + 1e-12


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
    g = torch.Generator().manual_seed(1)
    n = 400
    lam = torch.logspace(0, -9, n, dtype=torch.float64) * (1 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64))
    lam = lam.sort(descending=True).values
    p = lam / lam.sum()
    truth = math.exp(float(-(p * p.log()).sum()))
    T = float(lam.sum())
    for m in (5, 40, 120):
        b = effective_rank_bounds(lam[:m].tolist(), n, T, [0.0] * m)
        assert isinstance(b, Bounds) and b.lower <= truth * (1 + 1e-12) and truth <= b.upper * (1 + 1e-12)
        # Ritz values below the eigenvalues (interlacing) and radii covering the gap: still valid.
        th = (lam[:m] * (1 - 1e-3)).tolist()
        b2 = effective_rank_bounds(th, n, T, (lam[:m] * 2e-3).tolist())
        assert b2.lower <= truth * (1 + 1e-12) <= b2.upper * (1 + 1e-12)
        assert b2.upper - b2.lower >= b.upper - b.lower - 1e-12
        b3 = effective_rank_bounds(th, n, T)  # no radii: excess on lambda_1, still a lower bound
        assert b3.lower <= truth <= b3.upper
    b = effective_rank_bounds(lam.tolist(), n, T, [0.0] * n)
    assert b.lower == pytest.approx(truth, rel=1e-12) and b.upper == pytest.approx(truth, rel=1e-12)


def test_auto_precision_exact_against_float64():
    """--dtype auto (float32 kernels; block Krylov for Theta and the big groups) against the float64
    reference: every reported eigenvalue within the float32 Krylov tolerance and within its stated error,
    ranks inside their stated bounds, per group and in total."""
    model = tiny_model(hidden=(40, 40, 40))
    grid = 34
    assert grid * grid > KRYLOV_MIN_POINTS
    kw = dict(grid=grid, method="exact", top_k=16, device="cpu")
    ref = ntk_report(model, dtype="float64", **kw)
    auto = ntk_report(model, dtype="auto", **kw)
    assert auto.dtype == "float32" and auto.dtype_requested == "auto" and ref.dtype_requested == "float64"
    assert "float32" in auto.precision and any("precision (--dtype auto)" in n for n in auto.notes)
    n = auto.points
    lam1 = ref.eigenvalues[0]
    assert auto.spectrum == "krylov" and ref.spectrum == "all" and len(ref.eigenvalues) == n
    assert 100 <= len(auto.eigenvalues) < n
    assert_close(auto.eigenvalues, ref.eigenvalues[: len(auto.eigenvalues)], torch.float32, "iterative")
    # the stated error: lambda_i in [theta_i, theta_i + eigenvalue_error lambda_1] (up to float32 kernels)
    err = auto.accuracy["eigenvalue_error"]
    kernel_slack = tol(torch.float32, "eig").atol * lam1
    for a, b in zip(auto.eigenvalues, ref.eigenvalues):
        assert a - kernel_slack <= b <= a + err * lam1 + kernel_slack
    assert auto.decay["100"] == pytest.approx(ref.decay["100"], rel=1e-3)
    assert auto.numerical_rank == ref.numerical_rank
    tlo, thi = auto.effective_rank_bounds
    assert tlo * (1 - 1e-5) <= ref.effective_rank <= thi * (1 + 1e-5) and thi - tlo <= 0.01 * tlo
    assert auto.accuracy["solver"].startswith("block Krylov") and "float32 GEMMs" in auto.accuracy["kernels"]
    krylov = [g for g in auto.groups if g.spectrum == "krylov"]
    assert krylov and auto.accuracy["groups"]["krylov_dims"]
    for g, r in zip(auto.groups, ref.groups):
        assert g.name == r.name and abs(g.trace_share - r.trace_share) <= 1e-6
        assert_close(g.top_eigenvalue, r.top_eigenvalue, torch.float32, "iterative")
        got = torch.tensor(g.eigenvalues, dtype=torch.float64)
        assert_close(got, r.eigenvalues[: len(got)], torch.float32, "iterative", scale=r.eigenvalues[0])
        if g.spectrum != "krylov":
            continue
        assert len(g.eigenvalues) >= auto.top_k
        lo, hi = g.effective_rank_bounds
        truth = spectrum_stats(r.eigenvalues, r.max_rank, auto.tol).effective_rank
        assert lo * (1 - 1e-5) <= truth <= hi * (1 + 1e-5) and hi - lo <= 0.01 * lo + 1e-12
        nlo, nhi = g.numerical_rank_bounds
        assert nlo <= r.numerical_rank <= nhi
        if nlo == nhi:
            assert g.numerical_rank == r.numerical_rank
    d = auto.to_dict()
    assert d["dtype"] == "float32" and d["dtype_requested"] == "auto" and d["precision"] == auto.precision
    assert d["spectrum"] == "krylov" and d["effective_rank_bounds"] == [tlo, thi]
    assert d["numerical_rank_bounds"] == [auto.numerical_rank] * 2
    assert all({"spectrum", "effective_rank_bounds", "numerical_rank_bounds"} <= set(g) for g in d["layers"])
    # small N: auto keeps every eigenvalue (a float64 eigvalsh is as fast there)
    small = ntk_report(model, grid=12, method="exact", top_k=8, dtype="auto")
    assert small.spectrum == "all" and len(small.eigenvalues) == 144 and small.effective_rank_bounds is None


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


def test_lanczos_group_top_eigenvalues_from_the_basis(monkeypatch):
    """Groups wider than SMALL_GRAM get their top eigenvalue from the Lanczos basis of Theta (refined by
    their own solve when the residual is above the tolerance), against eigvalsh of the group kernel."""
    from inrdiag.ntk import kernel

    model = tiny_model(hidden=(24, 24, 24))
    monkeypatch.setattr(kernel, "SMALL_GRAM", 100)  # the hidden groups (p = 25 * 24 = 600) go the "top" way
    rep = ntk_report(model, grid=20, method="lanczos", top_k=6, dtype="float64")
    x = make_grid((20, 20))
    tops = [g for g in rep.groups if g.spectrum == "top"]
    assert len(tops) == 2 and "refined" in rep.accuracy["groups"]
    for g in tops:
        lam1 = float(eigvals_desc(reference_ntk(model, x, group_params(model, g.name)))[0])
        assert g.top_eigenvalue == pytest.approx(lam1, rel=1e-6)
        assert "relative residual" in g.note
