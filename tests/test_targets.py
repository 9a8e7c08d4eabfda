"""Targets: loading conventions and metrics against direct numpy computations."""

from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from inrdiag.errors import TargetError
from inrdiag.fitting.targets import iou, load_target, psnr


def test_image_grid_order_and_scaling(tmp_path):
    img = (np.arange(5 * 7).reshape(5, 7) * 7).astype(np.uint8)
    iio.imwrite(tmp_path / "g.png", img)
    t = load_target(tmp_path / "g.png")
    assert t.kind == "image" and t.shape == (5, 7) and t.channels == 1
    np.testing.assert_allclose(t.values[:, 0].numpy(), img.reshape(-1) / 255.0, rtol=0, atol=1e-7)
    xy = t.coords()
    assert torch.equal(xy[0], torch.tensor([-1.0, -1.0], dtype=torch.float64))  # top-left pixel
    assert torch.equal(xy[6], torch.tensor([-1.0, 1.0], dtype=torch.float64))  # top-right pixel


@pytest.mark.parametrize("mode,channels,dtype,scale", [("L", 1, np.uint8, 255), ("RGB", 3, np.uint8, 255),
                                                       ("RGBA", 3, np.uint8, 255), ("I16", 1, np.uint16, 65535)])  # fmt: skip
def test_image_modes(tmp_path, mode, channels, dtype, scale):
    rng = np.random.default_rng(0)
    shape = {"L": (6, 4), "RGB": (6, 4, 3), "RGBA": (6, 4, 4), "I16": (6, 4)}[mode]
    img = rng.integers(0, scale + 1, size=shape).astype(dtype)
    iio.imwrite(tmp_path / "x.png", img)
    t = load_target(tmp_path / "x.png")
    assert t.channels == channels and t.shape == (6, 4)
    ref = img.reshape(24, -1)[:, :channels] / scale
    np.testing.assert_allclose(t.values.numpy(), ref, atol=1e-6)


def test_resample_keeps_corners(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    img[0, 0] = 255
    iio.imwrite(tmp_path / "c.png", img)
    t = load_target(tmp_path / "c.png", size=15)
    assert t.shape == (15, 15) and float(t.values[0, 0]) > 0.5


def test_volume(tmp_path):
    vol = np.zeros((4, 5, 6), bool)
    vol[1:3, 2:4, 3:5] = True
    np.savez_compressed(tmp_path / "v.npz", occupancy=vol)
    t = load_target(tmp_path / "v.npz")
    assert t.kind == "occupancy" and t.shape == (4, 5, 6)
    np.testing.assert_array_equal(t.values[:, 0].numpy(), vol.reshape(-1).astype(np.float32))
    np.save(tmp_path / "v.npy", vol.astype(np.uint8))
    assert load_target(tmp_path / "v.npy").shape == (4, 5, 6)


@pytest.mark.parametrize("make,msg", [
    (lambda p: p.write_bytes(b"not an image"), "cannot read"),
    (lambda p: iio.imwrite(p, np.zeros((1, 1), np.uint8)), "2x2"),
])  # fmt: skip
def test_bad_images(tmp_path, make, msg):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(TargetError, match=msg):
        load_target(path)


@pytest.mark.parametrize("arr,msg", [(np.zeros((4, 4)), "3-D"), (np.full((3, 3, 3), 0.5), "only 0 and 1")])
def test_bad_volumes(tmp_path, arr, msg):
    np.save(tmp_path / "v.npy", arr)
    with pytest.raises(TargetError, match=msg):
        load_target(tmp_path / "v.npy")


def test_psnr_and_iou_against_numpy():
    rng = np.random.default_rng(1)
    y = rng.random((50, 3))
    f = y + rng.normal(0, 0.05, size=y.shape)
    mse = np.mean((np.clip(f, 0, 1) - y) ** 2)
    assert math.isclose(psnr(torch.tensor(f), torch.tensor(y)), -10 * np.log10(mse), rel_tol=1e-12)
    occ = rng.random((100, 1)) > 0.5
    logits = rng.normal(size=(100, 1))
    pred = 1 / (1 + np.exp(-logits)) > 0.5
    ref = (pred & occ).sum() / (pred | occ).sum()
    assert math.isclose(iou(torch.tensor(logits), torch.tensor(occ.astype(np.float32))), ref, rel_tol=1e-12)
