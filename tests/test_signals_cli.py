"""The new kinds across commands: ntk --target, sae's scorer, cohort refusals, --target-kind checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import inrdiag

ROOT = Path(__file__).resolve().parents[1]


def test_ntk_target_on_a_mesh_and_on_audio(tmp_path, cli):
    pytest.importorskip("trimesh")
    pytest.importorskip("soundfile")
    from inrdiag.models.inits import build_model

    m3 = tmp_path / "m3.safetensors"
    inrdiag.save(build_model("default", 3, 1, 2, 16, 0), m3)
    r = cli("ntk", m3, "--grid", "6", "--target", ROOT / "examples" / "signals" / "torus.obj", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert any("occupancy target" in n for n in d["target"]["notes"])
    m1 = tmp_path / "m1.safetensors"
    inrdiag.save(build_model("siren-audio", 1, 1, 2, 16, 0), m1)
    r = cli("ntk", m1, "--grid", "256", "--target", ROOT / "examples" / "signals" / "chirp.wav", "--json")
    assert r.code == 0, r.err
    assert r.json()["target"]["alignment"]


def test_sae_scorer_kinds():
    from inrdiag.sae.analysis import Scorer

    y = torch.tensor([[-0.05], [0.02], [-0.1], [0.3]])  # sdf: inside = rows 0, 2
    out = torch.tensor([[-0.01], [-0.02], [0.05], [0.2]])  # predicted inside = rows 0, 1
    s = Scorer("sdf", y)
    assert s.name == "IoU" and s.metric(s.point_stats(out).sum(0)) == pytest.approx(1 / 3)
    a = Scorer("audio", torch.tensor([[0.5], [-0.5]]))
    f = torch.tensor([[0.5], [-2.0]])  # clipped to -1: mse 0.125
    assert a.name == "PSNR" and a.metric(a.point_stats(f).sum(0)) == pytest.approx(-10 * math.log10(0.125))


def test_kind_and_type_mismatches_are_one_line_errors(tmp_path, cli):
    r = cli("fit", ROOT / "examples" / "images" / "camera.png", "--target-kind", "sdf")
    assert r.code == 2 and "needs a mesh" in r.err
    r = cli("fit", ROOT / "examples" / "signals" / "chirp.wav", "--target-kind", "video")
    assert r.code == 2 and "audio target" in r.err
    r = cli("fit", ROOT / "examples" / "signals" / "moving_disc.npy", "--target-kind", "image")
    assert r.code == 2 and "needs an image" in r.err
    r = cli("fit", ROOT / "examples" / "images" / "camera.png", "--target-kind", "cube")
    assert r.code == 2 and "unknown target kind" in r.err
    (tmp_path / "sounds").mkdir()
    (tmp_path / "sounds" / "a.wav").write_bytes((ROOT / "examples" / "signals" / "chirp.wav").read_bytes())
    r = cli("cohort-train", tmp_path / "sounds", "-o", tmp_path / "c.safetensors")
    assert r.code == 2 and "holds no images" in r.err


def test_shipped_signal_samples_regenerate(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "examples" / "make_signal_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    for name in ("chirp.wav", "torus.obj", "moving_disc.npy"):
        assert (tmp_path / name).read_bytes() == (ROOT / "examples" / "signals" / name).read_bytes(), name
    assert np.load(tmp_path / "moving_disc.npy").shape == (8, 32, 32, 1)
