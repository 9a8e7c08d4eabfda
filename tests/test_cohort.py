"""Cohort training and freeze sweeps on tiny cohorts (4 images of 12x12)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import inrdiag
from inrdiag.cohort.freeze import fit_from_encoder, freeze_sweep
from inrdiag.cohort.train import (
    CohortError,
    CohortRecipe,
    build_cohort,
    cohort_state,
    list_images,  # fmt: skip
    load_cohort,
    load_images,
    save_cohort,
    train_cohort,
)
from inrdiag.errors import SpecError


@pytest.fixture
def cohort_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cohort"
    d.mkdir()
    yy, xx = np.mgrid[0:12, 0:12] / 11.0
    for i in range(5):
        img = 0.5 + 0.4 * np.sin((i + 1) * xx * 3 + i) * np.cos(yy * (i + 2))
        img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
        iio.imwrite(d / f"img_{i}.png", (img * 255).astype(np.uint8))
    (d / "notes.txt").write_text("not an image")
    return d


def recipe(**kw):
    base = dict(backbone="siren", depth=3, width=16, shared_layers=2, size=12, steps=30, lr=1e-3, seed=0)
    base.update(kw)
    return CohortRecipe(**base)


def test_list_images_skips_and_lists_other_files(cohort_dir, tmp_path):
    images, other = list_images(cohort_dir)
    assert [p.name for p in images] == [f"img_{i}.png" for i in range(5)] and other == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CohortError, match="no images"):
        list_images(empty)


def test_encoder_is_shared_and_heads_are_independent():
    models = build_cohort(recipe(), heads=3, out_features=1)
    assert models[1].linears[0] is models[0].linears[0] and models[2].linears[1] is models[0].linears[1]
    assert models[1].linears[2] is not models[0].linears[2]
    x = inrdiag.make_grid((5, 5)).float()
    feats = models[0].features(x, 1)
    loss_0 = models[0].head(feats, 2).pow(2).sum()
    grads = torch.autograd.grad(loss_0, [p for m in models[1:] for k in (2, 3) for p in m.linears[k].parameters()],
                                allow_unused=True)  # fmt: skip
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)  # head 0's loss never reaches heads 1, 2
    # The split forward equals each model's own forward.
    for m in models:
        assert torch.equal(m.head(m.features(x, 1), 2), m(x))  # the same operations in the same order


def test_train_save_load_round_trip(cohort_dir, tmp_path):
    images, _ = list_images(cohort_dir)
    data = load_images(images[:4], 12)
    r = recipe()
    res = train_cohort(data, r, device="cpu")
    models = res.models
    assert len(res.psnr) == 4 and len(res.loss) == r.steps and res.loss[-1] < res.loss[0]
    path = tmp_path / "cohort.safetensors"
    save_cohort(models, r, data.names, path)
    cohort = load_cohort(path)
    loaded = cohort.models
    assert cohort.names == data.names and cohort.recipe == r
    x = inrdiag.make_grid((12, 12)).float()
    for a, b in zip(models, loaded):
        with torch.no_grad():
            torch.testing.assert_close(a.eval()(x), b(x), rtol=0, atol=0)
    # `inrdiag.load` reads the same file: encoder + head 2, freeze candidates within the encoder.
    one = inrdiag.load(path, head=2)
    assert one.shared_layers == 2 and one.heads == 4 and one.head_names == data.names
    with torch.no_grad():
        torch.testing.assert_close(one.model(x), loaded[2](x))
    rep = inrdiag.rank_report(one.model, grid=8, shared_layers=one.shared_layers)
    srs = [layer.weight_stable_rank for layer in rep.layers[:2]]
    assert rep.freeze_candidates == [0, 1] and rep.recommended_freeze_depth == 1 + int(np.argmax(srs))
    assert set(cohort_state(models, 2)) == set(iio_keys(path))


def iio_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


@pytest.mark.parametrize("k", [0, 1, 2])
def test_frozen_layers_stay_bit_identical(k):
    r = recipe()
    models = build_cohort(r, heads=2, out_features=1)
    enc = models[0]
    before = {key: v.clone() for key, v in enc.state_dict().items()}
    y = torch.rand(36, 1)
    fitted = fit_from_encoder(enc, 2, k, y, (6, 6), r, steps=5, lr=1e-2, seed=1, eval_steps=[5], device="cpu")
    model = fitted.model
    assert len(fitted.psnr) == 1 and fitted.final_loss > 0
    for j in range(len(model.linears)):
        same = torch.equal(model.linears[j].weight, before[f"linears.{j}.weight"]) if j < 2 else None
        if j < k:
            assert same, f"frozen layer {j} changed"
        elif j < 2:
            assert not same, f"unfrozen layer {j} did not train"
    assert all(torch.equal(v, before[key]) for key, v in enc.state_dict().items())  # the encoder is copied


def test_freeze_sweep_report(cohort_dir):
    images, _ = list_images(cohort_dir)
    r = recipe(steps=10)
    train = load_images(images[:3], 12)
    test = load_images(images[3:], 12)
    models = train_cohort(train, r, device="cpu").models
    calls = []
    rep = freeze_sweep(models[0], r, train.names, test, steps=6, device="cpu", progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [(i, 8) for i in range(1, 9)]  # (fits done, fits): 2 images x 4 rows
    assert [row.k for row in rep.rows] == [None, 0, 1, 2]
    assert all(len(v) == 2 for row in rep.rows for v in row.psnr.values())
    assert rep.recommended_freeze_depth == 1 + int(np.argmax(rep.stable_ranks))
    finals = {row.k: row.mean(6) for row in rep.rows if row.k is not None}
    assert finals[rep.measured_best_k] == max(finals.values())
    assert rep.to_dict()["agree"] == (rep.recommended_freeze_depth == rep.measured_best_k)


def test_recipe_validation():
    with pytest.raises(CohortError, match="shared-layers 5"):
        recipe(shared_layers=5)
    with pytest.raises(CohortError, match="backbone"):
        recipe(backbone="relu")


def test_read_cohort_is_the_one_reader(cohort_dir, tmp_path):
    from inrdiag.cohort.file import is_encoder_key, read_cohort

    images, _ = list_images(cohort_dir)
    r = recipe(steps=2)
    res = train_cohort(load_images(images[:3], 12), r, device="cpu")
    path = tmp_path / "c.safetensors"
    save_cohort(res.models, r, res.names, path)
    cf = read_cohort(path)
    assert cf.shared_layers == 2 and len(cf.heads) == 3 and cf.names == res.names and cf.recipe() == r
    assert set(cf.encoder) == {k for k in res.models[0].state_dict() if is_encoder_key(k, 2)}
    for d, m in enumerate(res.models):
        state = cf.head_state(d)
        assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    with pytest.raises(CohortError, match="out of range"):
        cf.head_state(3)
    single = tmp_path / "one.safetensors"
    inrdiag.save(res.models[0], single)
    with pytest.raises(CohortError, match="not an inrdiag cohort checkpoint"):
        read_cohort(single)
    with pytest.raises(SpecError, match="unexpected"):
        is_encoder_key("weight", 2)


def test_recipe_resolution_split_and_checkpoint_discovery(cohort_dir, tmp_path):
    from inrdiag.cohort.folders import find_cohort_checkpoint, resolve_recipe, split_images
    from inrdiag.errors import InrdiagError

    r = resolve_recipe(depth=3, seed=5)
    assert (r.shared_layers, r.depth, r.seed, r.lr) == (3, 3, 5, 1e-4)
    base = recipe()
    assert resolve_recipe(base, size=20, seed=2) == CohortRecipe(**{**base.to_dict(), "size": 20, "seed": 2})
    with pytest.raises(CohortError, match="width=16, but --width 32"):
        resolve_recipe(base, width=32)
    images, _ = list_images(cohort_dir)
    train, test = split_images(images, 2, 0)
    assert len(test) == 2 and sorted(train + test) == images and split_images(images, 2, 0) == (train, test)
    assert find_cohort_checkpoint(cohort_dir) is None
    for name in ("a.safetensors", "b.safetensors"):
        (tmp_path / name).write_bytes(b"")
        if name == "a.safetensors":
            assert find_cohort_checkpoint(tmp_path) == tmp_path / name
    with pytest.raises(CohortError, match="2 .safetensors files"):
        find_cohort_checkpoint(tmp_path)
    with pytest.raises(InrdiagError, match=r"2\^32 - 1"):
        recipe(seed=2**32)


def test_folder_functions_are_the_commands(cohort_dir, tmp_path):
    """train_folder / sweep_folder: what cohort-train and freeze-sweep run, callable from Python."""
    from inrdiag.cohort.folders import sweep_folder, train_folder

    r = recipe(steps=3)
    calls = []
    res = train_folder(cohort_dir, r, device="cpu", progress=lambda *a: calls.append(a))
    assert res is not None and len(res.models) == 5 and res.skipped == ["notes.txt (not an image file)"]
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)] and all(c[3] != c[3] for c in calls)  # metric NaN
    assert len(res.loss) == 3 and res.loss[-1] == pytest.approx(calls[-1][2])
    run = sweep_folder(cohort_dir, steps=2, recipe={"depth": 2, "width": 8, "size": 8, "steps": 2}, device="cpu",
                       save=tmp_path / "c.safetensors")  # fmt: skip
    assert run.main and run.report.steps == 2 and len(run.report.test_images) == 2
    assert any("cohort saved" in n for n in run.report.notes) and (tmp_path / "c.safetensors").exists()
