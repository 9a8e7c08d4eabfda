"""The fitting loop: determinism, metrics against direct computations, hold-out split, rank tracking."""

from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from inrdiag import compare
from inrdiag.errors import InrdiagError
from inrdiag.fitting.loop import FitConfig, fit, holdout_mask
from inrdiag.fitting.targets import load_target
from inrdiag.models.predict import predict


@pytest.fixture
def image16(tmp_path):
    y, x = np.mgrid[0:16, 0:16]
    img = (127 + 120 * np.sin(x / 2.0) * np.cos(y / 3.0)).astype(np.uint8)
    iio.imwrite(tmp_path / "img.png", img)
    return load_target(tmp_path / "img.png")


@pytest.fixture
def volume8(tmp_path):
    g = np.linspace(-1, 1, 8)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    np.savez(tmp_path / "ball.npz", occupancy=(x**2 + y**2 + z**2) < 0.5)
    return load_target(tmp_path / "ball.npz")


def small(**kw) -> FitConfig:
    return FitConfig(**{"depth": 2, "width": 16, "steps": 30, "lr": 1e-2, "device": "cpu", **kw})


def test_same_seed_same_numbers(image16):
    a = fit(image16, small(seed=3))
    b = fit(image16, small(seed=3))
    assert a.curve_loss == b.curve_loss and a.metric == b.metric
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    c = fit(image16, small(seed=4, init="default"))
    d = fit(image16, small(seed=5, init="default"))
    assert c.curve_loss != d.curve_loss


def test_fit_learns_and_metric_matches_numpy(image16):
    res = fit(image16, small(steps=60))
    assert res.curve_loss[-1] < res.curve_loss[0]
    out = predict(res.model.eval(), image16.coords(dtype=torch.float32)).numpy()
    mse = np.mean((np.clip(out, 0, 1).astype(np.float64) - image16.values.numpy()) ** 2)
    assert res.metric == pytest.approx(-10 * math.log10(mse), rel=1e-9)
    assert res.full_metric == res.metric and res.heldout_metric is None
    assert res.metric_name == "PSNR" and res.train_points == 256 and res.batch_size == 256


def test_holdout_split(image16):
    mask = holdout_mask((16, 16), 2)
    assert int(mask.sum()) == 64 and bool(mask[0]) and not bool(mask[1]) and not bool(mask[16])
    res = fit(image16, small(holdout_stride=2))
    assert res.train_points == 64 and res.heldout_metric is not None
    out = predict(res.model.eval(), image16.coords(dtype=torch.float32))
    ho = (out[~mask].clamp(0, 1).double() - image16.values[~mask].double()).pow(2).mean()
    assert res.heldout_metric == pytest.approx(-10 * math.log10(float(ho)), rel=1e-9)


def test_occupancy_iou_and_sampled_batches(volume8):
    res = fit(volume8, small(steps=40, batch_size=100, init="rank-expand"))
    assert res.metric_name == "IoU" and res.batch_size == 100
    out = predict(res.model.eval(), volume8.coords(dtype=torch.float32))[:, 0].numpy()
    pred, truth = out > 0, volume8.values[:, 0].numpy() > 0.5
    assert res.metric == pytest.approx((pred & truth).sum() / (pred | truth).sum())
    assert 0.0 <= res.metric <= 1.0


def test_track_rank_records_every_layer(image16):
    res = fit(image16, small(steps=20, track_rank=10))
    assert [r.step for r in res.ranks] == [0, 10, 20]
    assert all(len(r.effective) == 2 for r in res.ranks)
    assert res.ranks[0].effective[0] == pytest.approx(res.init_inlet_effective_rank)


@pytest.mark.parametrize("init", ["default", "siren", "pe", "ff", "bn"])
def test_every_init_fits(image16, init):
    res = fit(image16, small(init=init, steps=10, lr=1e-3))
    assert math.isfinite(res.metric) and res.config.init == init
    if init == "bn":
        assert not res.model.training  # diagnostics see eval mode


def test_bad_configs(image16):
    with pytest.raises(InrdiagError, match="unknown init"):
        fit(image16, small(init="kaiming"))
    with pytest.raises(InrdiagError, match="--steps must be >= 1"):
        fit(image16, small(steps=0))
    with pytest.raises(InrdiagError, match="lower --lr"):
        fit(image16, small(lr=1e30, steps=5, curve_points=5))


def test_compare_table(image16):
    res = compare(image16, ["default", "rank-expand"], seeds=2, config=small(steps=10))
    assert [r.init for r in res.rows] == ["default", "rank-expand"]
    row = res.rows[1]
    assert row.seeds == [0, 1] and len(row.metrics) == 2
    mean, std = row.mean_std
    assert mean == pytest.approx(np.mean(row.metrics)) and std == pytest.approx(np.std(row.metrics, ddof=1))
    assert res.rows[1].inlet_effective_rank[0] > res.rows[0].inlet_effective_rank[0]
    assert res.to_dict()["rows"][0]["init"] == "default"


def test_threads_option_is_restored(image16):
    before = torch.get_num_threads()
    res = fit(image16, small(steps=5, threads=1))
    assert res.config.threads == 1 and torch.get_num_threads() == before
    with pytest.raises(InrdiagError, match="--threads must be >= 1"):
        fit(image16, small(threads=0))


def test_bn_refuses_single_point_batches(image16):
    with pytest.raises(InrdiagError, match="batch norm needs at least 2 points"):
        fit(image16, small(init="bn", batch_size=1))


def test_progress_on_report_steps_and_layout_restored(image16):
    calls = []
    res = fit(image16, small(steps=30, curve_points=10), progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == res.curve_step == [1, *range(3, 31, 3)]
    assert [c[2] for c in calls] == res.curve_loss and [c[3] for c in calls] == res.curve_metric
    assert all(p.is_contiguous() for p in res.model.parameters())


def test_training_layout_keeps_values_and_restores():
    from inrdiag.fitting.optim import training_layout
    from inrdiag.models.inits import build_model

    model = build_model("default", 2, 1, 2, 8, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    inlet = model.linears[0].weight
    with pytest.raises(RuntimeError, match="inside"):
        with training_layout([model]):
            assert inlet.stride() == (1, 8) and not model.linears[1].weight.stride() == (1, 8)
            assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
            raise RuntimeError("inside")
    assert model.linears[0].weight is inlet and inlet.is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
