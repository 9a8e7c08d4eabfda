"""CLI contract of fit / compare / reinit: outputs, provenance, JSON, one-line errors, no overwrites."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import tiny_model

import inrdiag

FAST = ("--depth", "2", "--width", "16", "--steps", "15", "--lr", "0.01", "--device", "cpu")


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    iio.imwrite(path, rng.integers(0, 256, size=(16, 16, 3)).astype(np.uint8))
    return path


def test_fit_writes_everything_with_provenance(cli, image, tmp_path):
    out, recon, plot = tmp_path / "m.safetensors", tmp_path / "r.png", tmp_path / "p.png"
    r = cli("fit", image, *FAST, "--init", "rank-expand", "--track-rank", "5", "-o", out, "--recon", recon,
            "--plot", plot, "--json")  # fmt: skip
    assert r.code == 0, r.err
    data = r.json()  # stdout holds only JSON
    assert data["config"]["init"] == "rank-expand" and data["metric_name"] == "PSNR"
    assert [x["step"] for x in data["ranks"]] == [0, 5, 10, 15]
    loaded = inrdiag.load(out)
    prov = loaded.provenance
    assert prov["init"] == "rank-expand" and prov["steps"] == 15 and prov["lr"] == 0.01 and prov["seed"] == 0
    assert prov["target_sha256"] == inrdiag.load_target(image).sha256
    assert prov["metric"] == pytest.approx(data["metric"])
    rec = iio.imread(recon)
    assert rec.shape == (16, 16, 3) and rec.dtype == np.uint8
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # The table form, and refusal to overwrite any of the outputs.
    before = out.read_bytes()
    for flag, path in (("-o", out), ("--recon", recon), ("--plot", plot)):
        r = cli("fit", image, *FAST, flag, path)
        assert r.code == 2 and r.err.startswith("error: ") and "--force" in r.err and r.err.count("\n") == 1
    assert out.read_bytes() == before
    r = cli("fit", image, *FAST, "-o", out, "--force")
    assert r.code == 0 and "PSNR" in r.out and "inlet rank at init" in r.out


def test_fit_occupancy_slices(cli, tmp_path):
    g = np.linspace(-1, 1, 8)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    np.save(tmp_path / "v.npy", (x**2 + y**2 + z**2 < 0.5).astype(np.uint8))
    r = cli("fit", tmp_path / "v.npy", *FAST, "--recon", tmp_path / "s.png", "--holdout-stride", "2", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["metric_name"] == "IoU" and d["heldout_metric"] is not None
    assert iio.imread(tmp_path / "s.png").ndim == 2


def test_compare_cli(cli, image, tmp_path):
    r = cli("compare", image, *FAST, "--inits", "default,rank-expand", "--seeds", "2", "--json",
            "--plot", tmp_path / "c.png")  # fmt: skip
    assert r.code == 0, r.err
    rows = r.json()["rows"]
    assert [x["init"] for x in rows] == ["default", "rank-expand"] and len(rows[0]["metrics"]) == 2
    r = cli("compare", image, *FAST, "--inits", "default", "--seeds", "1")
    assert r.code == 0 and "mean ± std" in r.out and "inlet eff. rank" in r.out


def test_reinit_restores_inlet_rank(cli, tmp_path):
    src = tmp_path / "m.safetensors"
    model = tiny_model(hidden=(16, 16), dtype=torch.float32)
    inrdiag.save(model, src)
    out = tmp_path / "re.safetensors"
    r = cli("reinit", src, "--scheme", "rank-expand", "-o", out)
    assert r.code == 0, r.err
    new = inrdiag.load(out).model
    assert torch.allclose(new.linears[0].weight.norm(dim=1), torch.ones(16))
    assert torch.equal(new.linears[1].weight, model.linears[1].weight)  # other layers untouched
    assert inrdiag.load(out).provenance["reinit"]["scheme"] == "rank-expand"
    before = cli("rank", src, "--grid", "64", "--json").json()["layers"][0]["representation"]
    after = cli("rank", out, "--grid", "64", "--json").json()["layers"][0]["representation"]
    assert after["numerical_rank"] > before["numerical_rank"]
    assert after["effective_rank"] > before["effective_rank"]
    data = out.read_bytes()
    r = cli("reinit", src, "--scheme", "default", "-o", out)
    assert r.code == 2 and "--force" in r.err and out.read_bytes() == data
    assert cli("reinit", src, "--scheme", "default", "-o", out, "--force").code == 0
    r = cli("reinit", src, "--scheme", "pe", "-o", tmp_path / "x.safetensors")
    assert r.code == 2 and "changes the architecture" in r.err
    sine = tmp_path / "s.safetensors"
    inrdiag.save(tiny_model(activation="sine", dtype=torch.float32), sine)
    r = cli("reinit", sine, "--scheme", "rank-expand", "-o", tmp_path / "y.safetensors")
    assert r.code == 2 and "threshold activations" in r.err
    assert not (tmp_path / "y.safetensors").exists()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make,msg", [
    (lambda t: _write(t / "x.png", b"not an image at all"), "cannot read as an image"),
    (lambda t: t / "missing.png", "no such file"),
    (lambda t: (iio.imwrite(t / "one.png", np.zeros((1, 1), np.uint8)), t / "one.png")[1], "at least 2x2"),
    (lambda t: (np.save(t / "flat.npy", np.zeros((4, 4), bool)), t / "flat.npy")[1], "must be 3-D"),
    (lambda t: (np.save(t / "f.npy", np.full((4, 4, 4), 0.5)), t / "f.npy")[1], "boolean"),
    (lambda t: _write(t / "v.txt", b"hello"), "unknown target type"),
])  # fmt: skip
def test_bad_targets(cli, tmp_path, make, msg):
    out = tmp_path / "o.safetensors"
    r = cli("fit", make(tmp_path), *FAST, "-o", out)
    assert r.code == 2 and r.err.startswith("error: ") and msg in r.err and r.err.count("\n") == 1
    assert not out.exists()


def test_enormous_image_refused_with_estimate(cli, image, monkeypatch):
    monkeypatch.setattr("inrdiag.fitting.targets.MAX_POINTS", 100)
    r = cli("fit", image, *FAST)
    assert r.code == 2 and "GiB" in r.err and "--size" in r.err


def test_bad_options(cli, image, tmp_path):
    r = cli("fit", image, "--init", "xavier")
    assert r.code == 2 and "unknown init 'xavier'" in r.err
    r = cli("compare", image, "--inits", "default,nope")
    assert r.code == 2 and "unknown init 'nope'" in r.err
    r = cli("fit", image, "--steps", "0")
    assert r.code == 2 and "--steps" in r.err
    p = tmp_path / "same.png"
    r = cli("fit", image, "--recon", p, "--plot", p)
    assert r.code == 2 and "both write" in r.err
    r = cli("fit", image, "--init", "rank-expand", "--device", "tpu")
    assert r.code == 2 and "unknown --device" in r.err


def test_sdf_png_recon_is_the_occupancy_slices_of_minus_f(tmp_path):
    """An SDF's ``--recon X.png``: the occupancy slice picture of -f against inside = sdf < 0 (top row the
    target, bottom row the reconstruction thresholded), written by the signals module itself."""
    import torch

    from inrdiag.fitting.targets import Target
    from inrdiag.signals.recon import _Negated, save_signal_reconstruction

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    g = torch.linspace(-1, 1, 8)
    pts = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    sdf = Target("sdf", "s.npy", "0", (8, 8, 8), (pts.norm(dim=1, keepdim=True) - 0.6).float())
    occ = Target("occupancy", "s.npy", "0", (8, 8, 8), (sdf.values < 0).float())
    save_signal_reconstruction(model, sdf, str(tmp_path / "a.png"))
    save_signal_reconstruction(_Negated(model), occ, str(tmp_path / "b.png"))
    a = iio.imread(tmp_path / "a.png")
    assert a.shape == (2 * 8 + 2, 3 * 8 + 2 * 2) and len(np.unique(a)) > 1
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    top = a[:8, :8] > 127  # the target's slice at 1/4 of axis 0: inside the sphere
    assert np.array_equal(top, (sdf.values[:, 0] < 0).reshape(8, 8, 8)[2].numpy())
