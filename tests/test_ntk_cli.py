"""The CLI contract of ``inrdiag ntk``: JSON keys, table, plot, one-line errors with exit code 2."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

import inrdiag


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.safetensors"
    inrdiag.save(tiny_model(dtype=torch.float32, batchnorm=[0]), path)
    return path


def test_ntk_json_contract(cli, model_file):
    r = cli("ntk", model_file, "--grid", "10", "--json", "--top-k", "5")
    assert r.code == 0, r.err
    data = r.json()
    assert data["points"] == 100 and data["method"] == "exact"
    ev = data["eigenvalues"]
    assert len(ev) == 100 and all(a >= b for a, b in zip(ev, ev[1:]))
    assert data["trace"] > 0 and data["condition_number_top_k"] == pytest.approx(ev[0] / ev[4])
    names = [layer["name"] for layer in data["layers"]]
    assert names == ["linears.0", "linears.1", "linears.2", "linears.3", "norms.0"]
    for layer in data["layers"]:
        assert set(layer) >= {"index", "name", "trace_share", "numerical_rank", "effective_rank", "top_eigenvalue"}
    assert sum(layer["trace_share"] for layer in data["layers"]) == pytest.approx(1.0)
    assert any("eval mode" in n for n in data["notes"])
    # the default precision is said: --dtype auto ran float32 kernels, a float64 eigvalsh of Theta
    assert data["dtype_requested"] == "auto" and data["dtype"] == "float32"
    assert data["precision"].startswith("float32 kernels") and "float32 GEMMs" in data["accuracy"]["kernels"]
    assert data["accuracy"]["solver"] == "eigvalsh (LAPACK, float64)"
    assert any(n.startswith("precision (--dtype auto)") for n in data["notes"])
    r = cli("ntk", model_file, "--grid", "10", "--json", "--top-k", "5", "--dtype", "float64")
    d64 = r.json()
    assert d64["dtype"] == "float64" and d64["accuracy"]["solver"] == "eigvalsh (LAPACK, float64)"
    assert max(abs(a - b) for a, b in zip(ev, d64["eigenvalues"])) <= 1e-5 * ev[0]


def test_ntk_lanczos_json_marks_unknown_ranks(cli, model_file):
    r = cli("ntk", model_file, "--points", "60", "--method", "lanczos", "--top-k", "4", "--json", "--seed", "1")
    assert r.code == 0, r.err
    data = r.json()
    assert data["method"] == "lanczos" and data["points"] == 60 and len(data["eigenvalues"]) == 4
    assert data["effective_rank"] is None and data["accuracy"]["converged"] is True
    assert data["dtype"] == "float32" and "float32 products, float64 basis" in data["accuracy"]["solver"]
    assert data["accuracy"]["max_relative_error_bound"] <= 2e-3
    r = cli("ntk", model_file, "--points", "60", "--method", "lanczos", "--top-k", "4", "--json", "--seed", "1",
            "--dtype", "float64")  # fmt: skip
    assert r.json()["accuracy"]["max_relative_residual"] <= 1e-8


def test_ntk_table_and_plot(cli, model_file, tmp_path):
    plot = tmp_path / "ntk.png"
    r = cli("ntk", model_file, "--grid", "8", "--plot", plot)
    assert r.code == 0, r.err
    assert "layer-wise decomposition" in r.out and "sum, not a mean" in r.out
    assert "precision (--dtype auto): float32 kernels" in r.out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("ntk", model_file, "--grid", "8", "--plot", plot)
    assert r.code == 2 and "--force" in r.err


@pytest.mark.parametrize("args,msg", [
    (["--top-k", "500"], "--top-k"),
    (["--points", "1000"], "--points"),
    (["--method", "svd"], "--method"),
    (["--dtype", "half"], "--dtype"),
    (["--grid", "3000", "--method", "exact"], "--points"),
])  # fmt: skip
def test_ntk_bad_requests(cli, model_file, args, msg):
    grid = [] if "--grid" in args else ["--grid", "10"]
    r = cli("ntk", model_file, *grid, *args)
    assert r.code == 2 and msg in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_ntk_nan_output(cli, tmp_path):
    model = tiny_model(dtype=torch.float32)
    with torch.no_grad():
        model.linears[2].weight[0, 0] = float("nan")
    inrdiag.save(model, tmp_path / "nan.safetensors")
    r = cli("ntk", tmp_path / "nan.safetensors", "--grid", "6")
    assert r.code == 2 and r.err.startswith("error: ") and "not finite" in r.err


def test_ntk_target_alignment_and_fit(cli, tmp_path):
    import numpy as np
    from imageio.v3 import imwrite

    img = (np.linspace(0, 255, 8 * 8).reshape(8, 8)).astype(np.uint8)
    imwrite(tmp_path / "t.png", img)
    inrdiag.save(tiny_model(dtype=torch.float32), tmp_path / "m.safetensors")
    r = cli("ntk", tmp_path / "m.safetensors", "--grid", "8", "--target", tmp_path / "t.png", "--fit-steps", "5",
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    t = r.json()["target"]
    assert t["alignment"][-1]["k"] == 64 and t["alignment"][-1]["fraction"] == pytest.approx(1.0)
    assert t["steps"][0] == 0 and len(t["measured_psnr"]) == len(t["predicted_psnr"])
    assert t["measured_psnr"][0] == pytest.approx(t["predicted_psnr"][0], abs=1e-4)
    r = cli("ntk", tmp_path / "m.safetensors", "--grid", "8", "--target", tmp_path / "nope.png")
    assert r.code == 2 and "no such file" in r.err


def test_ntk_target_leaves_model_alone_and_expands_gray(cli, tmp_path):
    """target_ntk works on a copy (the caller's model keeps its dtype and mode); a gray image fits an RGB model."""
    import numpy as np
    from imageio.v3 import imwrite

    from inrdiag.ntk.kernel import ntk_report
    from inrdiag.ntk.target import target_ntk

    model = tiny_model(dtype=torch.float32).train()
    rep = ntk_report(model, grid=6, dtype="float64", vectors=True)
    target_ntk(rep, model, torch.rand(36, 1), lr=1.0, steps=3, fit=True)
    assert model.linears[0].weight.dtype == torch.float32 and model.training

    imwrite(tmp_path / "g.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    rgb = tiny_model(dtype=torch.float32, out_features=3)
    inrdiag.save(rgb, tmp_path / "rgb.safetensors")
    r = cli("ntk", tmp_path / "rgb.safetensors", "--grid", "8", "--target", tmp_path / "g.png", "--json")
    assert r.code == 0, r.err
    assert "gray target repeated to RGB" in r.json()["target"]["notes"]
