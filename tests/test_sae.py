"""Sparse autoencoders: shapes, TopK sparsity, exact splicing, batched ablations vs one-by-one, files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_model
from tolerances import assert_close, tol

from inrdiag.grid import make_grid
from inrdiag.sae.analysis import Scorer, ablate_atoms, analyse, atom_stats, layer_activations, splice_forward
from inrdiag.sae.model import Codes, SAEConfig, SAEError, SparseAutoencoder, encode_all, make_sae, train_sae
from inrdiag.sae.saelens import load_sae, save_sae

#: Batched ablations vs one spliced forward per atom, in float64: the same sums in another order.
EXACT64 = tol(torch.float64, "exact")


def approx64(v):
    return pytest.approx(v, rel=EXACT64.rtol, abs=EXACT64.atol)


ARCHS = [
    dict(activation="relu"),
    dict(activation="sine", w0=30.0),
    dict(activation="relu", encoding="fourier", fourier_features=8),
    dict(activation="relu", batchnorm=[0, 1, 2]),
]


def _trained(kind="topk", atoms=24, k=4, d=16, n=200, steps=30, seed=0):
    X = torch.rand(n, d, generator=torch.Generator().manual_seed(1))
    cfg = SAEConfig(atoms=atoms, kind=kind, k=k, steps=steps, batch_size=64, seed=seed)
    return train_sae(X, cfg).sae, X, cfg


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_shapes_and_forward_is_decode_encode(kind):
    sae, X, _ = _trained(kind)
    assert sae.W_enc.shape == (16, 24) and sae.W_dec.shape == (24, 16)
    assert sae.b_enc.shape == (24,) and sae.b_dec.shape == (16,)
    with torch.no_grad():
        f = sae.encode(X)
        assert f.shape == (200, 24) and bool((f >= 0).all())
        assert torch.equal(sae(X), sae.decode(f))
        vals, idx = sae.encode_sparse(X)  # the sparse decode the engine uses agrees with the dense one
        assert_close(sae.decode_sparse(vals, idx), sae.decode(f), torch.float32)
    # decoder rows are kept at unit norm
    assert_close(sae.W_dec.norm(dim=1), torch.ones(24), torch.float32)


def test_topk_keeps_exactly_k():
    sae, X, _ = _trained("topk", k=5)
    with torch.no_grad():
        pre = sae.pre(X)
        f = sae.encode(X)
    assert bool(((f > 0).sum(1) <= 5).all())
    assert int((f != 0).sum(1).max()) == 5  # exactly k where the top k pre-activations are positive
    pos = (pre > 0).sum(1)
    assert torch.equal((f > 0).sum(1), pos.clamp(max=5))
    # the kept atoms are the k largest pre-activations
    top = torch.topk(pre, 5, dim=1).indices
    kept = torch.zeros_like(f, dtype=torch.bool).scatter_(1, top, True)
    assert bool((f[~kept] == 0).all())


def test_training_reduces_error_and_is_seeded():
    X = torch.rand(300, 12, generator=torch.Generator().manual_seed(3))
    cfg = SAEConfig(atoms=32, k=4, steps=60, batch_size=64, lr=3e-3)
    ra, rb = train_sae(X, cfg), train_sae(X, cfg)
    (a, la), (b, lb) = (ra.sae, ra.losses), (rb.sae, rb.losses)
    c = train_sae(X, SAEConfig(atoms=32, k=4, steps=60, batch_size=64, lr=3e-3, seed=1)).sae
    assert la == lb and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.W_dec, c.W_dec)
    assert la[-1] < 0.5 * la[0]


@pytest.mark.parametrize("arch", ARCHS, ids=["relu", "siren", "fourier", "bn"])
def test_identity_splice_is_exact(arch):
    model = tiny_model(**arch).eval()
    x = make_grid((7, 7))
    with torch.no_grad():
        for layer in range(3):
            z = layer_activations(model, x, layer)
            assert torch.equal(splice_forward(model, layer, z), model(x))


def _setup(arch, layer, kind="image", atoms=20, k=3):
    torch.manual_seed(0)
    model = tiny_model(**arch).eval()
    x = make_grid((6, 6))
    with torch.no_grad():
        z = layer_activations(model, x, layer)
    sae = train_sae(z, SAEConfig(atoms=atoms, k=k, steps=20, batch_size=16)).sae.double()  # float64 throughout
    codes = encode_all(sae, z)
    y = torch.rand(36, 1) if kind == "image" else (torch.rand(36, 1) > 0.5).double()
    return model, x, z, sae, codes, Scorer(kind, y)


@pytest.mark.parametrize("arch", ARCHS, ids=["relu", "siren", "fourier", "bn"])
@pytest.mark.parametrize("layer", [0, 2])
@pytest.mark.parametrize("kind", ["image", "occupancy"])
def test_batched_ablation_matches_one_by_one(arch, layer, kind):
    model, x, z, sae, codes, scorer = _setup(arch, layer, kind)
    ab = ablate_atoms(model, layer, sae, codes, scorer, chunk=7)  # small chunks: chunking exact
    totals, base_total = ab.totals, ab.base
    assert ab.atoms == list(range(sae.d_sae)) and totals.shape == (sae.d_sae, base_total.shape[0])
    with torch.no_grad():
        f = sae.encode(z)
        base = scorer.metric(scorer.point_stats(splice_forward(model, layer, sae.decode(f))).sum(0))
        assert scorer.metric(base_total) == approx64(base)
        got = scorer.metric(totals)
        for j in range(sae.d_sae):
            g = f.clone()
            g[:, j] = 0
            want = scorer.metric(scorer.point_stats(splice_forward(model, layer, sae.decode(g))).sum(0))
            assert got[j] == approx64(want), j


@pytest.mark.parametrize("kind", ["image", "occupancy"])
def test_batched_ablation_relu_sae(kind):
    """The ReLU + L1 SAE (many more codes per point) through the same batched path."""
    torch.manual_seed(0)
    model = tiny_model(activation="sine", w0=30.0).eval()
    x = make_grid((6, 6))
    with torch.no_grad():
        z = layer_activations(model, x, 1)
    sae = train_sae(z, SAEConfig(atoms=12, kind="relu", l1=0.05, steps=20, batch_size=16)).sae.double()
    codes = encode_all(sae, z)
    y = torch.rand(36, 1) if kind == "image" else (torch.rand(36, 1) > 0.5).double()
    scorer = Scorer(kind, y)
    got = scorer.metric(ablate_atoms(model, 1, sae, codes, scorer, chunk=5).totals)
    with torch.no_grad():
        f = sae.encode(z)
        assert (f > 0).sum(1).float().mean() > 1  # several atoms per point
        for j in range(12):
            g = f.clone()
            g[:, j] = 0
            want = scorer.metric(scorer.point_stats(splice_forward(model, 1, sae.decode(g))).sum(0))
            assert got[j] == approx64(want), j


def test_ablating_a_silent_atom_changes_nothing():
    model, x, z, sae, codes, scorer = _setup(ARCHS[0], 1)
    with torch.no_grad():  # make atom 0 never fire: a very negative encoder bias
        sae.b_enc[0] = -1e6
    codes = encode_all(sae, z)
    assert not bool((codes.atoms == 0).any())
    ab = ablate_atoms(model, 1, sae, codes, scorer, atoms=[0, 1])
    assert ab.atoms == [0, 1] and torch.equal(ab.totals[0], ab.base)  # bit for bit


def test_atom_stats_coverage_and_spread():
    sae = make_sae(2, 2, "topk", 1)
    coords = make_grid((10, 10))

    # atom 0 fires on one corner point, atom 1 uniformly everywhere
    rows = torch.cat([torch.tensor([0]), torch.arange(100)])
    atoms = torch.cat([torch.tensor([0]), torch.ones(100, dtype=torch.long)])
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(2))
    st = atom_stats(Codes(rows=rows, atoms=atoms, values=torch.ones(101), recon=torch.empty(0, 2)), sae, coords)
    assert st.coverage.tolist() == [0.01, 1.0]
    assert st.spread[0] == 0.0
    assert_close(st.spread[1], 1.0, torch.float64)
    assert_close(st.centroid[0], coords[0], torch.float64)


def test_save_load_round_trip(tmp_path):
    sae, X, cfg = _trained("topk")
    paths = save_sae(sae, cfg, tmp_path / "out", {"model_name": "m"})
    cfg_json = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg_json["architecture"] == "topk" and cfg_json["k"] == 4
    assert (cfg_json["d_in"], cfg_json["d_sae"]) == (16, 24) and cfg_json["apply_b_dec_to_input"] is True
    from safetensors.torch import load_file

    assert set(load_file(paths[0])) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    back = load_sae(tmp_path / "out").sae
    with torch.no_grad():
        assert torch.equal(back(X), sae(X))
    with pytest.raises(Exception, match="exists"):
        save_sae(sae, cfg, tmp_path / "out")
    save_sae(sae, cfg, tmp_path / "out", force=True)
    relu, _, rcfg = _trained("relu")
    save_sae(relu, rcfg, tmp_path / "r")
    assert json.loads((tmp_path / "r" / "cfg.json").read_text())["architecture"] == "standard"
    back = load_sae(tmp_path / "r").sae
    with torch.no_grad():
        assert torch.equal(back(X), relu(X))


def test_saelens_without_b_dec_subtraction(tmp_path):
    """A SAELens file with apply_b_dec_to_input = false encodes x W_enc + b_enc (no subtraction)."""
    sae, X, cfg = _trained("relu")
    save_sae(sae, cfg, tmp_path / "s")
    p = tmp_path / "s" / "cfg.json"
    c = json.loads(p.read_text())
    c["apply_b_dec_to_input"] = False
    p.write_text(json.dumps(c))
    back = load_sae(tmp_path / "s").sae
    with torch.no_grad():
        want = torch.relu(X @ sae.W_enc + sae.b_enc) @ sae.W_dec + sae.b_dec
        assert_close(back(X), want, torch.float32)


@pytest.mark.parametrize("bad,msg", [
    (dict(kind="gated"), "--kind"), (dict(atoms=0), "--atoms"), (dict(k=0), "--k"), (dict(k=99, atoms=10), "--k"),
    (dict(steps=0), "--steps"), (dict(lr=-1.0), "--lr"), (dict(lr=math.nan), "--lr"), (dict(l1=-1.0), "--l1"),
    (dict(batch_size=0), "--batch-size"),
])  # fmt: skip
def test_config_validation(bad, msg):
    with pytest.raises(SAEError, match=msg):
        SAEConfig(**bad).validate()


def test_analyse_end_to_end_and_bad_layer():
    model = tiny_model(dtype=torch.float32)
    x = make_grid((8, 8), dtype=torch.float32)
    y = torch.rand(64, 1)
    cfg = SAEConfig(atoms=16, k=3, steps=10, batch_size=32)
    res = analyse(model, 1, x, y, "image", cfg, device="cpu", grid=(8, 8))
    rep = res.report
    assert isinstance(res.sae, SparseAutoencoder) and res.codes.values.numel() == round(rep.l0 * 64)
    assert res.to_dict() == rep.to_dict() and rep.layer_name == "linears.1"
    d = rep.to_dict()
    assert d["metrics"]["l0"] <= 3 and 0 <= d["metrics"]["dead_fraction"] <= 1
    assert len(d["atoms"]) == 16 and rep.ablated == sum(1 for c in rep.coverage if c > 0)
    rep2 = analyse(model, 1, x, y, "image", cfg, device="cpu", ablate=2).report
    assert rep2.ablated == 2 and rep2.to_dict()["metrics"] == d["metrics"]  # seeded: the same SAE
    for layer in (-1, 3, 9):
        with pytest.raises(SAEError, match="out of range"):
            analyse(model, layer, x, y, "image", cfg)


def test_memory_refusal():
    X = torch.rand(10, 4)
    with pytest.raises(Exception, match="GiB"):
        train_sae(X, SAEConfig(atoms=2**31, k=1, steps=1))


def test_python_api_bad_arguments_are_sae_errors():
    """Issue 11 item 4: train_sae / load_sae with None, empty or wrong-typed inputs raise SAEError."""
    from inrdiag.sae.model import SAEConfig, SAEError, train_sae
    from inrdiag.sae.saelens import load_sae

    cfg = SAEConfig(atoms=8, k=2, steps=2)
    for bad in (None, torch.zeros(0, 8), torch.zeros(4), torch.zeros(3, 4, dtype=torch.int64)):
        with pytest.raises(SAEError):
            train_sae(bad, cfg, torch.device("cpu"))
    with pytest.raises(SAEError, match="SAEConfig"):
        train_sae(torch.zeros(4, 8), {"atoms": 8}, torch.device("cpu"))
    with pytest.raises(SAEError, match="folder path"):
        load_sae(None)


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.5, "0"])
def test_python_api_seeds_are_range_checked(seed):
    """Issue 12 item 6: the Python API refuses seeds outside [0, 2^32 - 1] (torch would alias them) as the CLI does."""
    X = torch.rand(20, 4, generator=torch.Generator().manual_seed(0))
    cfg = SAEConfig(atoms=8, k=2, steps=2, batch_size=8, seed=seed)
    with pytest.raises(SAEError, match="--seed"):
        cfg.validate()
    with pytest.raises(SAEError, match="--seed"):
        train_sae(X, cfg)
    model = tiny_model(dtype=torch.float32)
    x = make_grid((4, 4), dtype=torch.float32)
    with pytest.raises(SAEError, match="--seed"):
        analyse(model, 0, x, torch.rand(16, 1), "image", cfg, device="cpu")


def test_largest_seed_trains_and_differs_from_zero():
    X = torch.rand(40, 4, generator=torch.Generator().manual_seed(0))
    top = train_sae(X, SAEConfig(atoms=8, k=2, steps=3, batch_size=8, seed=2**32 - 1))
    zero = train_sae(X, SAEConfig(atoms=8, k=2, steps=3, batch_size=8, seed=0))
    assert len(top.losses) == 3 and not torch.equal(top.sae.W_dec, zero.sae.W_dec)


def test_progress_is_the_one_progress_type():
    """progress(step, total, loss, metric) after every step, metric NaN (an SAE has none)."""
    X = torch.rand(40, 4, generator=torch.Generator().manual_seed(0))
    calls = []
    res = train_sae(X, SAEConfig(atoms=8, k=2, steps=4, batch_size=8), progress=lambda *a: calls.append(a))
    assert [c[:3] for c in calls] == [(s, 4, res.losses[s - 1]) for s in range(1, 5)]
    assert all(len(c) == 4 and math.isnan(c[3]) for c in calls)
    with pytest.raises(SAEError, match="progress"):
        train_sae(X, SAEConfig(atoms=8, k=2, steps=1), progress=3)


def test_one_module_level_autoencoder_class(tmp_path):
    """Issue 12 item 2: every SAE is an instance of the one module-level class (no class built per call), so
    isinstance works, and a whole SAE pickles and deep-copies."""
    import copy
    import pickle

    from inrdiag.sae.model import JumpReLUSAE

    a, b = make_sae(4, 6, "topk", 2), make_sae(4, 6, "relu", 0)
    assert type(a) is type(b) is SparseAutoencoder
    trained, X, cfg = _trained("topk")
    assert type(trained) is SparseAutoencoder and trained.architecture == "topk" and b.architecture == "standard"
    back = pickle.loads(pickle.dumps(trained))
    with torch.no_grad():
        assert torch.equal(back(X), trained(X)) and torch.equal(copy.deepcopy(trained)(X), trained(X))
    save_sae(trained, cfg, tmp_path / "s")
    assert type(load_sae(tmp_path / "s").sae) is SparseAutoencoder
    j = JumpReLUSAE(4, 6)
    assert isinstance(j, SparseAutoencoder) and j.architecture == "jumprelu"
    assert list(j.state_dict()) == ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"]  # SAELens's order
    with pytest.raises(SAEError, match="kind"):
        SparseAutoencoder(4, 6, "gated")


def test_analyse_arguments_are_sae_errors():
    model = tiny_model(dtype=torch.float32)
    x = make_grid((4, 4), dtype=torch.float32)
    cfg = SAEConfig(atoms=8, k=2, steps=2, batch_size=8)
    for kw, msg in [({"ablate": -1}, "--ablate"), ({"sae": "folder"}, "SparseAutoencoder"), ({"kind": "png"}, "kind")]:
        args = {"kind": "image", **kw}
        kind = args.pop("kind")
        with pytest.raises(SAEError, match=msg):
            analyse(model, 0, x, torch.rand(16, 1), kind, cfg, device="cpu", **args)
    with pytest.raises(SAEError, match="rows"):
        analyse(model, 0, x, torch.rand(15, 1), "image", cfg, device="cpu")
    # a given SAE without cfg is described by itself (steps 0: not trained here)
    sae = train_sae(layer_activations(model, x, 0), cfg).sae
    rep = analyse(model, 0, x, torch.rand(16, 1), "image", device="cpu", sae=sae).report
    assert rep.config.steps == 0 and rep.config.atoms == 8 and rep.losses == [] and rep.source is None
