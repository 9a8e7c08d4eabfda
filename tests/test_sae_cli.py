"""inrdiag sae from the command line: targets from provenance, outputs, determinism, bad input."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import tiny_model

import inrdiag

SAE = ["--atoms", "16", "--k", "2", "--steps", "5", "--batch-size", "32"]


@pytest.fixture
def fitted(cli, tmp_path):
    img = tmp_path / "t.png"
    iio.imwrite(img, (np.random.default_rng(0).random((12, 12)) * 255).astype(np.uint8))
    out = tmp_path / "m.safetensors"
    r = cli("fit", img, "--init", "siren", "--depth", "2", "--width", "8", "--steps", "5", "--size", "10", "-o", out)
    assert r.code == 0, r.err
    return out


def _one_line_error(r, msg):
    assert r.code == 2 and msg in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_sae_on_fitted_model(cli, fitted, tmp_path):
    png, out = tmp_path / "atoms.png", tmp_path / "sae"
    r = cli("sae", fitted, "--layer", "1", *SAE, "--json", "--atoms-png", png, "-o", out)
    assert r.code == 0, r.err
    d = r.json()
    assert d["grid"] == {"shape": [10, 10], "points": 100}  # the fitted resolution, from provenance
    assert d["layer"] == 1 and d["width"] == 8 and len(d["atoms"]) == 16
    m = d["metrics"]
    assert m["metric"] == "PSNR" and m["l0"] <= 2 and m["fvu"] >= 0
    assert d["ablation"]["ablated"] == sum(1 for a in d["atoms"] if a["coverage"] > 0)
    assert png.stat().st_size > 0
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_in"] == 8 and cfg["d_sae"] == 16 and cfg["k"] == 2
    # the saved SAE analysed again gives the same numbers
    again = cli("sae", fitted, "--layer", "1", "--sae", out, "--json")
    assert again.code == 0, again.err
    assert again.json()["metrics"] == m
    # existing outputs are refused before any work, and kept
    before = (out / "sae_weights.safetensors").read_bytes()
    _one_line_error(cli("sae", fitted, "--layer", "1", *SAE, "-o", out), "exists")
    _one_line_error(cli("sae", fitted, "--layer", "1", *SAE, "--atoms-png", png), "exists")
    assert (out / "sae_weights.safetensors").read_bytes() == before
    assert cli("sae", fitted, "--layer", "1", *SAE, "-o", out, "--force").code == 0


def test_sae_table_and_seed(cli, fitted):
    r = cli("sae", fitted, "--layer", "0", *SAE, "--kind", "relu", "--ablate", "3")
    assert r.code == 0, r.err
    assert "FVU" in r.out and "single-atom ablations (3 atoms" in r.out and "spliced in at layer 0" in r.out
    a = cli("sae", fitted, "--layer", "0", *SAE, "--json", "--seed", "4").json()
    b = cli("sae", fitted, "--layer", "0", *SAE, "--json", "--seed", "4").json()
    for key in ("metrics", "atoms", "final_loss"):
        assert a[key] == b[key]


def test_sae_cohort_head_target(cli, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        iio.imwrite(folder / f"{i}.png", rng.integers(0, 255, (8, 8), dtype=np.uint8))
    ck = tmp_path / "c.safetensors"
    r = cli("cohort-train", folder, "-o", ck, "--depth", "2", "--width", "8", "--size", "8", "--steps", "3")
    assert r.code == 0, r.err
    r = cli("sae", ck, "--layer", "1", "--head", "2", *SAE, "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["target"]["path"].endswith("2.png") and d["grid"]["points"] == 64
    assert any("head 2" in n for n in d["notes"])


def test_sae_bad_input(cli, fitted, tmp_path):
    _one_line_error(cli("sae", fitted, "--layer", "2", *SAE), "out of range")
    _one_line_error(cli("sae", fitted, "--layer", "-1", *SAE), "out of range")
    _one_line_error(cli("sae", fitted, "--layer", "0", "--atoms", "3000000000", "--k", "1"), "GiB")
    _one_line_error(cli("sae", fitted, "--layer", "0", "--kind", "gated"), "--kind")
    _one_line_error(cli("sae", fitted, "--layer", "0", "--k", "0"), "--k")
    # a model that records no target
    plain = tmp_path / "plain.safetensors"
    inrdiag.save(tiny_model(dtype=torch.float32), plain)
    _one_line_error(cli("sae", plain, "--layer", "0", *SAE), "--target")
    # the recorded target has gone: say so, name the flag
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(fitted, moved / "m.safetensors")
    (tmp_path / "t.png").unlink()
    _one_line_error(cli("sae", moved / "m.safetensors", "--layer", "0", *SAE), "--target")
    # ... and --target fixes it; a 3-D target does not fit a 2-D model
    img = tmp_path / "u.png"
    iio.imwrite(img, np.zeros((6, 6, 3), np.uint8))
    r = cli("sae", moved / "m.safetensors", "--layer", "0", *SAE, "--target", img, "--json")
    assert r.code == 0, r.err
    assert any("RGB target converted to gray" in n for n in r.json()["notes"])
    vol = tmp_path / "v.npy"
    np.save(vol, np.zeros((4, 4, 4), np.uint8))
    _one_line_error(cli("sae", plain, "--layer", "0", *SAE, "--target", vol), "3-D target")
    # -o on an existing file, --sae on a folder without an SAE
    (tmp_path / "file").write_text("x")
    _one_line_error(cli("sae", fitted, "--layer", "0", *SAE, "-o", tmp_path / "file"), "not a folder")
    _one_line_error(cli("sae", fitted, "--layer", "0", "--sae", tmp_path), "no cfg.json")
