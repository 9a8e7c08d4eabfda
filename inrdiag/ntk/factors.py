"""Factors of the layer-wise empirical NTK (DESIGN.md section 3): ``Theta = sum_g Theta_g``.

Every parameter group g is held as two matrices, ``Theta_g = (A A^T) ⊙ (D D^T)``:

- a linear layer ``h_k = W_k a + b_k``: ``A`` = its inputs with a column of ones for the bias
  (N x (d_in + 1)), ``D`` = the sensitivities ``d f_c / d h_k`` of every output channel side by side
  (N x (C d_out)); ``(A A^T + 1) ⊙ sum_c D_c D_c^T`` is exactly ``sum_c J_c J_c^T`` restricted to W_k, b_k;
- any other group (batch-norm scale/shift, modulators, a learnable w0, a linear layer called twice,
  complex weights): ``A`` = the per-sample Jacobian rows of all channels side by side (N x (C p)),
  ``D`` = a column of ones, so ``Theta_g = A A^T``. Complex parameters count as their real and
  imaginary parts (two real parameters each), the NTK of gradient descent on ``(Re w, Im w)``.

The model is anything ``inrdiag.models.adapter.as_adapter`` takes: a linear layer is "exact-factor" when it is
called once per point with real, untied weights; its A and D come from the tensors the adapter's
forward hooks record. D comes from batched backward passes: in eval mode samples do not interact (the
adapter checks it), so the gradient of ``sum_n f_c(x_n)`` with respect to the outputs ``h_k`` (all n
at once) has row n equal to ``d f_c(x_n) / d h_k(x_n)``. One backward per output channel gives every
layer's D.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InrdiagError
from ..gram import add_lower, mirror_lower
from ..models.adapter import as_adapter

#: Rows per chunk of the forward/backward passes and of the Khatri-Rao Gram. Cache-sized: the factors of
#: the 4x256 net at N = 65,536 took 0.98 s at 2048 rows against 1.20 s at 8192 (``bench_ntk.py --part
#: topk``, alternated); the inlet's Khatri-Rao Gram 0.39 s against 0.40 s (a one-off timing).
CHUNK = 2048
#: Most rows per chunk of the matrix-free products (fewer when ``MATMUL_BUFFER`` says so): the staircase
#: factors' block product took 0.65 s at 8192 against 0.70 s at 2048 (best of 4, alternated).
MATMUL_CHUNK = 8192
#: Row blocks of ``Factor.kernel``: the lower block triangle is computed, the rest mirrored.
KERNEL_BLOCK = 256
#: Numbers in the chunk buffer of ``Factor.matmul`` (2 MiB of float32: L2/L3-resident; measured on the
#: 4x256 net at N = 65,536, block 4, one thread: 60 GFLOP/s against 46-52 at 4 MiB and 42 at 16 MiB).
MATMUL_BUFFER = 1 << 19
#: Widest broadcast block (b times the narrower factor's columns) whose first GEMM of ``Factor.matmul`` is
#: split in two halves run side by side (bmm): such thin GEMMs run on one thread.
THIN_SPLIT = 64
#: Largest single-column factor ``X = A * D`` whose transpose ``Factor.matmul`` keeps as a contiguous copy.
SINGLE_COPY_BYTES = 256 << 20


@dataclass
class Factor:
    """One parameter group's kernel ``Theta_g = (A A^T) ⊙ (D D^T)`` (N x N), never formed unless asked."""

    index: int
    name: str
    #: "linear" (exact factorised form) or "generic" (per-sample Jacobian from torch.func).
    kind: str
    A: Tensor
    D: Tensor
    parameters: int
    #: Why a group is generic ("" for a linear layer): e.g. "BatchNorm1d (not an nn.Linear)".
    note: str = ""
    #: ``X = A * D`` and ``X^T`` (both contiguous) when A or D is a single column (``Theta_g = X X^T``),
    #: made once by ``matmul``.
    _single: tuple[Tensor, Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def points(self) -> int:
        return int(self.A.shape[0])

    @property
    def feature_dim(self) -> int:
        """Columns p of the Khatri-Rao factor K (rows ``a_n ⊗ d_n``): ``Theta_g = K K^T``, rank <= p."""
        return int(self.A.shape[1] * self.D.shape[1])

    def diag(self) -> Tensor:
        """``diag(Theta_g)_n = |a_n|^2 |d_n|^2``, so ``tr Theta_g`` costs O(N (d_in + d_out))."""
        return (self.A * self.A).sum(1) * (self.D * self.D).sum(1)

    def kernel(self, out: Tensor | None = None) -> Tensor:
        """The N x N matrix ``(A A^T) ⊙ (D D^T)``; added into ``out`` when given (then returned).

        Symmetric, so only its lower block triangle is computed (row blocks of ``KERNEL_BLOCK``: half the
        GEMM flops; measured 0.25 s against 0.37 s for a 4096 x 4096 hidden-layer kernel, one thread) and
        mirrored tile by tile."""
        A: Tensor = self.A
        D: Tensor | None = self.D
        assert D is not None
        if D.shape[1] == 1 and A.shape[1] == 1:
            v = A[:, 0] * D[:, 0]
            return torch.outer(v, v) if out is None else out.addr_(v, v)
        if D.shape[1] == 1 or A.shape[1] == 1:  # scalar-output head or a generic group: one Gram
            A, D = A * D, None
        n = A.shape[0]
        K = torch.empty(n, n, dtype=A.dtype, device=A.device)
        bs = KERNEL_BLOCK
        for s in range(0, n, bs):
            e = min(n, s + bs)
            blk = K[s:e, :e]  # rows s:e, columns 0:e: the lower block triangle and the diagonal block
            torch.mm(A[s:e], A[:e].T, out=blk)
            if D is not None:
                blk.mul_(D[s:e] @ D[:e].T)
        for s in range(0, n - bs, bs):  # mirror the strict upper part, tile by tile (cache-sized transposes)
            e = s + bs
            for r in range(e, n, bs):
                K[s:e, r : r + bs].copy_(K[r : r + bs, s:e].T)
        return K if out is None else out.add_(K)

    def khatri_rao_gram(self, chunk: int = CHUNK) -> Tensor:
        """``K^T K`` (p x p), with the same nonzero eigenvalues as ``Theta_g``; cheap when p << N."""
        p = self.feature_dim
        G = torch.zeros(p, p, dtype=self.A.dtype, device=self.A.device)
        for s in range(0, self.points, chunk):
            a, d = self.A[s : s + chunk], self.D[s : s + chunk]
            add_lower(G, (a[:, :, None] * d[:, None, :]).reshape(a.shape[0], p), KERNEL_BLOCK)
        return mirror_lower(G, KERNEL_BLOCK)

    def matmul(self, V: Tensor, chunk: int = MATMUL_CHUNK) -> Tensor:
        """``Theta_g V`` for an N x b block, without any N x N matrix.

        Column j: ``rowsum((A M_j) ⊙ D)`` with ``M_j = A^T diag(v_j) D``. The block is handled by two
        GEMMs per row chunk, broadcasting ``v_j`` over the narrower of A and D; cost ``4 N b p`` flops.
        Rows are chunked so the (rows x b p_A) temporaries stay cache-sized (``MATMUL_BUFFER`` numbers, one
        buffer reused by every chunk: measured 1.4x faster than 4M-number temporaries allocated per chunk,
        for b = 4 on the 4x256 net at N = 65,536, one thread).
        """
        A, D = self.A, self.D
        if A.shape[1] > D.shape[1]:  # broadcast over the narrower factor: (A,D) play symmetric roles
            A, D = D, A
        n, b = V.shape
        pa, pd = A.shape[1], D.shape[1]
        if pa == 1:  # Theta_g = diag(a) (D D^T) diag(a) = X X^T: two thin GEMMs on X = D * a, made once
            if self._single is None:
                X = D if bool((A == 1).all()) else (D * A).contiguous()  # a cut factor's A is ones: no copy
                # X^T kept contiguous on CPU unless it is big (X^T V from a transposed view is ~3x slower
                # there: bench_ntk.py --part topk); elsewhere a view (cuBLAS takes transposes as they are)
                small = X.numel() * X.element_size() <= SINGLE_COPY_BYTES
                Xt = X.T.contiguous() if X.device.type == "cpu" and small else X.T
                self._single = (X, Xt)
            X, Xt = self._single
            return X @ (Xt @ V)
        rows = max(256, min(chunk, n, MATMUL_BUFFER // max(1, b * pa)))
        M = torch.zeros(b * pa, pd, dtype=V.dtype, device=V.device)
        buf = torch.empty(rows, b, pa, dtype=V.dtype, device=V.device)
        for s in range(0, n, rows):
            r = min(rows, n - s)
            AV = torch.mul(V[s : s + r, :, None], A[s : s + r, None, :], out=buf[:r])
            if b * pa <= THIN_SPLIT and r % 2 == 0:
                # so thin a GEMM runs on one thread (the sum over rows is not split): two halves side by
                # side in one bmm use both (bench_ntk.py --part topk)
                h = r // 2
                M.add_(torch.bmm(AV.view(2, h, b * pa).transpose(1, 2), D[s : s + r].view(2, h, pd)).sum(0))
            else:
                M.addmm_(AV.view(r, b * pa).T, D[s : s + r])
        out = torch.empty(n, b, dtype=V.dtype, device=V.device)
        flat = buf.view(rows, b * pa)
        for s in range(0, n, rows):
            r = min(rows, n - s)
            DM = torch.mm(D[s : s + r], M.T, out=flat[:r]).view(r, b, pa)
            DM.mul_(A[s : s + r, None, :])
            torch.sum(DM, -1, out=out[s : s + r])
        return out

    def compressed(self, reuse: bool = False) -> Factor:
        """The same kernel without the columns of A and D that are exactly zero on every point.

        Dead ReLU units (never active on the points) give zero columns in the next layer's A and in
        their own layer's D; they add nothing to ``A A^T`` or ``D D^T``, so dropping them is exact and
        saves their share of every matrix-free product (about 40% for a default-init 4x256 ReLU net).

        ``reuse=True`` packs the kept columns into the front of A's and D's own memory instead of copying
        them (``_pack_columns``): no new memory, so none of its first-touch page faults. This factor's A and
        D are overwritten then: only its metadata (name, index, ``feature_dim``, ...) stays valid. The NTK
        report uses it on the factors it made itself.
        """

        def reduce(X: Tensor) -> Tensor:
            # a column is alive when its max or its min is nonzero (NaN counts as alive); with index_select,
            # 0.084 s against 0.105 s for (X != 0).any(0) and a boolean-mask copy (65,536 x 257, float32)
            alive = (X.amax(0) != 0) | (X.amin(0) != 0)
            if bool(alive.all()) or not bool(alive.any()):
                return X
            idx = alive.nonzero()[:, 0]
            if reuse and X.is_contiguous():
                return _pack_columns(X, idx)
            return X.index_select(1, idx)

        return self.with_factors(reduce(self.A), reduce(self.D))

    def with_factors(self, A: Tensor, D: Tensor) -> Factor:
        """This group with other A and D (same index, name, kind, parameters and note)."""
        return Factor(index=self.index, name=self.name, kind=self.kind, A=A, D=D, parameters=self.parameters,
                      note=self.note)  # fmt: skip

    def lowrank(self, budget: float) -> LowRank:
        """A cheaper kernel within ``bound <= budget`` of this one in spectral norm: a sum of factors.

        Rotate A and D into the eigenvectors of their Grams (``A A^T = (A V)(A V)^T``, columns by
        decreasing eigenvalue). One side, Q, is split into column groups of ``CUT_GROUP``; group g keeps
        the top ``a_g`` directions of the other side, P (``a_g = 0``: the group is dropped). The dropped
        part of group g is ``E_g = (P_tail P_tail^T) ⊙ (Q_g Q_g^T)``, both PSD, so by Schur's bounds
        ``||E_g|| <= min(||P_tail||^2 max_n |q_g,n|^2, max_n |p_tail,n|^2 ||Q_g||^2)``, where
        ``||P_tail||^2`` is the largest dropped eigenvalue of ``P^T P``; ``bound`` is the sum over the
        groups. The ``a_g`` minimise the product's cost ``sum_g a_g |g|`` under ``bound <= budget``
        (Lagrangian bisection), and the side split is the cheaper one: a staircase, not a rectangle,
        since a group of weak Q directions needs few P directions (the 4x256 example's hidden layers at
        N = 65,536: 33,182 columns at bound 0.0132 with the budget ``lanczos_topk`` shares among the groups,
        39,313 at 0.0077 with it split evenly; the earlier rectangular cut kept 70,310 at 0.0066:
        ``bench_ntk.py --part topk``). By Weyl, every eigenvalue of the summed
        kernel moves by at most the summed bounds; the dropped parts are PSD, so the cheaper kernel is
        below this one (``Theta'_g <= Theta_g``). When A or D is a single column (a scalar-output head, a
        generic group), ``Theta_g = X X^T`` with ``X = A * D`` and X itself is cut: ``||Theta_g - Theta'_g||``
        = its largest dropped eigenvalue. ``lowrank_all`` cuts several factors within one shared budget.
        """
        from .lowrank import lowrank_all  # the cut's module imports this one

        return lowrank_all([self], budget)[0]

    def flops_kernel(self) -> float:
        """Flops of ``kernel()``: ``N (N + KERNEL_BLOCK) (p_A + p_D)`` (the lower block triangle of one GEMM per
        factor)."""
        n = self.points
        return float(n) * (n + KERNEL_BLOCK) * (self.A.shape[1] + self.D.shape[1])

    def flops_matmul(self, b: int = 1) -> float:
        """Flops of ``matmul()`` on b vectors: ``4 N b p``."""
        return 4.0 * self.points * b * self.feature_dim


def _pack_columns(X: Tensor, idx: Tensor, chunk: int = 1024) -> Tensor:
    """``X[:, idx]`` (idx increasing, fewer than X's columns) written into the front of X's own memory and
    returned as a contiguous view of it; X (contiguous) is overwritten.

    Row chunk by row chunk: the chunk's kept columns are copied out first, then written to rows ``s..e``
    of the packed k-column layout, elements ``s k .. e k`` of X's memory. Those lie before ``e p`` (k < p),
    in rows of X already copied out: this chunk's or earlier ones'."""
    n, k = X.shape[0], idx.numel()
    flat = X.view(-1)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        kept = X[s:e].index_select(1, idx)
        flat[s * k : e * k].view(e - s, k).copy_(kept)
    return flat[: n * k].view(n, k)


def gram64(X: Tensor, block: int = 64, chunk: int = 4096) -> Tensor:
    """``X^T X`` in float64, its lower block triangle computed (column blocks of ``block``) and mirrored.

    Accumulated over row chunks of ``chunk``, each converted to float64 on its own: no N x p float64 copy
    of X (120 MB for a 65,536 x 232 factor; as fast as converting it whole once the allocator is tuned,
    ``bench_ntk.py --part topk``)."""
    p = X.shape[1]
    G = torch.zeros(p, p, dtype=torch.float64, device=X.device)
    for s in range(0, X.shape[0], chunk):
        add_lower(G, X[s : s + chunk].to(torch.float64), block)
    return mirror_lower(G, block)


@dataclass
class LowRank:
    """``Factor.lowrank``'s result: the cheaper kernel, a sum of factors, and the bound it incurred."""

    parts: list[Factor]
    #: ``||Theta_g - sum of the parts' kernels||_2 <= bound`` (0 when nothing was dropped).
    bound: float

    @property
    def feature_dim(self) -> int:
        return sum(f.feature_dim for f in self.parts)

    def matmul(self, V: Tensor, chunk: int = MATMUL_CHUNK) -> Tensor:
        """The summed kernel times an N x b block, part by part (``matmul_sum``)."""
        return matmul_sum(self.parts, V, chunk)

    def kernel(self) -> Tensor:
        """The summed kernel as an N x N matrix (``kernel_sum``; tests and small N only)."""
        return kernel_sum(self.parts)

    def flops_matmul(self, b: int = 1) -> float:
        return sum(f.flops_matmul(b) for f in self.parts)


def linear_factors(model: Any, x: Tensor, chunk: int = CHUNK, names: list[str] | None = None) -> list[Factor]:
    """A and D of every exact-factor linear layer of ``model`` (eval mode) on the points ``x`` (N x d).

    ``A`` = the layer's recorded input with a ones column for the bias (N x (d_in + 1)), ``D`` =
    ``[d f_1 / d h_k | ... | d f_C / d h_k]`` (N x C d_out). One hooked forward pass and C backward
    passes per chunk of ``chunk`` points; chunking changes nothing but memory (the tests check
    chunked == unchunked).
    """
    ad = as_adapter(model, names=names)
    ks = ad.exact_layers
    n = x.shape[0]
    # written into by row chunk: no per-chunk lists to concatenate, no second copy for the bias column
    As: dict[int, Tensor] = {}
    Ds: dict[int, Tensor] = {}
    C = ad.out_features
    for s in range(0, n, chunk):
        xc = x[s : s + chunk]
        with torch.enable_grad():
            rec = ad.record(xc)
            if not bool(torch.isfinite(rec.out).all()):
                raise InrdiagError("the model's output is not finite (NaN/Inf) on the grid; check the weights")
            if ks and not rec.out.requires_grad:
                raise InrdiagError("the model's output does not depend on any parameter that requires grad")
            hs = [rec.outputs[k] for k in ks]
            per_c: list[list[Tensor]] = []
            for c in range(C):
                g = (
                    torch.autograd.grad(rec.out[:, c].sum(), hs, retain_graph=c < C - 1, allow_unused=True)
                    if hs
                    else ()
                )
                per_c.append([torch.zeros_like(h) if gi is None else gi for gi, h in zip(g, hs)])
        e = s + xc.shape[0]
        for i, k in enumerate(ks):
            a, h = rec.inputs[k], hs[i]
            if k not in As:
                bias = 1 if ad.layers[k].has_bias else 0
                As[k] = torch.empty(n, a.shape[1] + bias, dtype=a.dtype, device=a.device)
                if bias:
                    As[k][:, -1] = 1
                Ds[k] = torch.empty(n, C * h.shape[1], dtype=h.dtype, device=h.device)
            As[k][s:e, : a.shape[1]] = a
            for c in range(C):
                Ds[k][s:e, c * h.shape[1] : (c + 1) * h.shape[1]] = per_c[c][i]
    factors: list[Factor] = []
    for k in ks:
        layer = ad.layers[k]
        nparam = sum(p.numel() for p in layer.module.parameters())
        factors.append(Factor(index=len(factors), name=layer.name, kind="linear", A=As[k], D=Ds[k], parameters=nparam))
    return factors


@dataclass
class GenericGroup:
    """Parameters that go the generic torch.func way: a display name, parameter names, and why."""

    name: str
    params: list[str]
    reason: str


def generic_groups(model: Any) -> list[GenericGroup]:
    """Every parameter not in an exact-factor linear layer, grouped by owning module (in parameter order).

    Parameters of linear layers never called by the forward are left out: their NTK term is exactly 0.
    """
    ad = as_adapter(model)
    paths = {layer.path: layer for layer in ad.layers}
    exact = {ad.layers[k].path for k in ad.exact_layers}
    called = set(paths)
    uncalled = {p for p, m in ad.module.named_modules() if isinstance(m, torch.nn.Linear) and p not in called}
    modules = dict(ad.module.named_modules())
    groups: dict[str, GenericGroup] = {}
    for name, _ in ad.module.named_parameters():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner in exact or owner in uncalled:
            continue
        if owner in paths:
            layer = paths[owner]
            key, why = layer.name, layer.reason
        else:
            key = owner or name
            mod = modules.get(owner)
            why = f"{type(mod).__name__} (not an nn.Linear)" if owner else "a parameter of the root module"
        groups.setdefault(key, GenericGroup(name=key, params=[], reason=why)).params.append(name)
    return list(groups.values())


def per_sample_jacobian(model: Any, x: Tensor, names: list[str], chunk: int = 1024) -> Tensor:
    """Per-sample Jacobian of all output channels w.r.t. the named parameters: N x (C p).

    The generic path: ``torch.func.vmap(jacrev(f))`` over samples, ``chunk`` samples at a time
    (memory O(chunk C p)); runs on whatever device the model is on. A complex parameter w is
    differentiated as the real pair ``(Re w, Im w)`` (``view_as_real``; torch.func refuses complex
    inputs), so it counts 2 real parameters per entry.
    """
    from torch.func import functional_call, jacrev, vmap

    module = as_adapter(model).module if not isinstance(model, torch.nn.Module) else model
    params = dict(module.named_parameters())
    fixed = {k: v.detach() for k, v in params.items() if k not in names}
    fixed.update(dict(module.named_buffers()))
    cplx = {k for k in names if params[k].is_complex()}
    wrt = {k: (torch.view_as_real(params[k].detach()) if k in cplx else params[k].detach()) for k in names}

    def f(p: dict[str, Tensor], x1: Tensor) -> Tensor:
        p = {k: (torch.view_as_complex(v) if k in cplx else v) for k, v in p.items()}
        return functional_call(module, {**fixed, **p}, (x1[None],))[0]

    jf = vmap(jacrev(f), in_dims=(None, 0))
    rows = []
    for s in range(0, x.shape[0], chunk):
        jac = jf(wrt, x[s : s + chunk])
        n, C = jac[names[0]].shape[:2]
        # columns ordered channel-major: [channel 0: all params | channel 1: ...]
        rows.append(torch.cat([jac[k].reshape(n, C, -1) for k in names], dim=2).reshape(n, -1))
    return torch.cat(rows)


def layer_factors(model: Any, x: Tensor, chunk: int = CHUNK, names: list[str] | None = None) -> list[Factor]:
    """Every parameter group's factor: exact-factor linear layers first (call order), then the generic
    groups (see ``generic_groups``); ``Theta = sum`` of their kernels, exactly."""
    ad = as_adapter(model, names=names)
    factors = linear_factors(ad, x, chunk)
    params = dict(ad.module.named_parameters())
    for grp in generic_groups(ad):
        G = per_sample_jacobian(ad.module, x, grp.params, chunk=max(1, min(chunk, 1024)))
        ones = torch.ones(G.shape[0], 1, dtype=G.dtype, device=G.device)
        nparam = sum(params[p].numel() * (2 if params[p].is_complex() else 1) for p in grp.params)
        factors.append(Factor(index=len(factors), name=grp.name, kind="generic", A=G, D=ones, parameters=nparam,
                              note=grp.reason))  # fmt: skip
    return factors


def kernel_sum(factors: list[Factor]) -> Tensor:
    """The full ``Theta = sum_g Theta_g`` (N x N)."""
    if not factors:
        raise ValueError("kernel_sum of no factors")
    out = factors[0].kernel()
    for f in factors[1:]:
        f.kernel(out)
    return out


def matmul_sum(factors: list[Factor], V: Tensor, chunk: int = MATMUL_CHUNK) -> Tensor:
    """``Theta V = sum_g Theta_g V`` (matrix-free)."""
    if not factors:
        raise ValueError("matmul_sum of no factors")
    out = factors[0].matmul(V, chunk)
    for f in factors[1:]:
        out.add_(f.matmul(V, chunk))
    return out
