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
