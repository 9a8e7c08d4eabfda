"""Video targets: .npy, frame folders, GIF and MP4, per-frame PSNR by hand, and the refusals."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tolerances import assert_close

from inrdiag.fitting.targets import load_target
from inrdiag.signals.errors import VideoError
from inrdiag.signals.kinds import frame_psnr

ROOT = Path(__file__).resolve().parents[1]


def clip(t=3, h=4, w=5, c=None):
    shape = (t, h, w) if c is None else (t, h, w, c)
    return (np.arange(np.prod(shape)).reshape(shape) * 7 % 256).astype(np.uint8)


def test_npy_4d_is_video_in_t_y_x_order(tmp_path):
    a = clip(c=3)
    np.save(tmp_path / "v.npy", a)
    t = load_target(tmp_path / "v.npy")
    assert t.kind == "video" and t.shape == (3, 4, 5) and t.channels == 3
    assert_close(t.values, a.reshape(-1, 3) / 255.0, torch.float32)
    c = t.coords()
    assert c[0].tolist() == [-1, -1, -1] and c[5 * 4 * 1].tolist()[0] == 0.0  # axis 0 is time (frame 1 of 3 at t=0)


def test_3d_npy_needs_the_video_kind(tmp_path):
    np.save(tmp_path / "g.npy", clip())
    t = load_target(tmp_path / "g.npy", kind="video")
    assert t.kind == "video" and t.shape == (3, 4, 5) and t.channels == 1
    with pytest.raises(Exception, match="boolean or hold only 0 and 1"):
        load_target(tmp_path / "g.npy")  # auto: a 3-D .npy is an occupancy grid


def test_frame_folder_in_natural_order_and_gif(tmp_path):
    a = clip(t=3, h=6, w=6)
    (tmp_path / "f").mkdir()
    for i, name in enumerate(["frame_2.png", "frame_10.png", "frame_1.png"]):
        iio.imwrite(tmp_path / "f" / name, a[[1, 2, 0][i]])
    t = load_target(tmp_path / "f")
    assert t.kind == "video" and t.shape == (3, 6, 6)
    assert_close(t.values[:, 0], a.reshape(-1) / 255.0, torch.float32)
    rgb = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (0, 120, 240)])
    iio.imwrite(tmp_path / "v.gif", rgb, extension=".gif", loop=0)
    g = load_target(tmp_path / "v.gif", kind="video")
    assert g.kind == "video" and g.shape == (3, 8, 8)


def test_mp4_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (30, 130, 230)]
    with av.open(str(tmp_path / "v.mp4"), "w") as out:
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    t = load_target(tmp_path / "v.mp4")
    assert t.kind == "video" and t.shape == (3, 16, 16) and t.meta["fps"] == pytest.approx(10)
    means = t.values.reshape(3, -1).mean(1).numpy() * 255
    np.testing.assert_allclose(means, [30, 130, 230], atol=6)  # lossy codec


def test_frame_psnr_by_hand():
    y = torch.zeros(2 * 4, 1)
    f = y.clone()
    f[:4] = 0.1  # frame 0: mse 0.01 -> 20 dB; frame 1 exact
    per = frame_psnr(f, y, 2)
    assert per[0] == pytest.approx(20.0) and per[1] == math.inf
    from inrdiag.fitting.targets import Target
    from inrdiag.signals.video import _frame_evaluator

    d = _frame_evaluator(Target("video", "x", "", (2, 2, 2), y))(None, f)
    assert d["overall_psnr"] == pytest.approx(-10 * math.log10(0.005)) and d["frame_psnr_min"] == pytest.approx(20)


def test_bad_videos_are_refused(tmp_path, cli, monkeypatch):
    np.save(tmp_path / "one.npy", clip(t=1, c=3))
    (tmp_path / "mixed").mkdir()
    iio.imwrite(tmp_path / "mixed" / "a.png", clip(t=1, h=4, w=4)[0])
    iio.imwrite(tmp_path / "mixed" / "b.png", clip(t=1, h=6, w=4)[0])
    (tmp_path / "single").mkdir()
    iio.imwrite(tmp_path / "single" / "a.png", clip(t=1)[0])
    for path, text in ((tmp_path / "one.npy", "1 frame"), (tmp_path / "mixed", "same size"),
                       (tmp_path / "single", "1 frame")):  # fmt: skip
        with pytest.raises(VideoError, match=text):
            load_target(path)
        r = cli("fit", path, "--steps", "1")
        assert r.code == 2 and text in r.err and r.err.count("\n") == 1
    import inrdiag.fitting.targets as targets

    np.save(tmp_path / "v.npy", clip(c=3))
    monkeypatch.setattr(targets, "MAX_POINTS", 10)
    monkeypatch.setattr(np, "asarray", lambda *a, **k: pytest.fail("decoded before the size check"))
    with pytest.raises(targets.TargetError, match="exceed the limit"):
        load_target(tmp_path / "v.npy")


def test_fit_video_sampled_batches_and_gif_recon(tmp_path, cli):
    out = tmp_path / "r.gif"
    r = cli("fit", ROOT / "examples" / "signals" / "moving_disc.npy", "--target-kind", "video", "--steps", "3",
            "--depth", "1", "--width", "16", "--batch-size", "512", "--recon", out, "--json")  # fmt: skip
    assert r.code == 0, r.err
    d = r.json()
    assert d["target"]["shape"] == [8, 32, 32] and d["batch_size"] == 512 and d["train_points"] == 8192
    assert len(d["details"]["frame_psnr"]) == 8 and d["metric"] == pytest.approx(d["details"]["overall_psnr"])
    assert iio.improps(out, index=None).shape[:3] == (8, 32, 32)
