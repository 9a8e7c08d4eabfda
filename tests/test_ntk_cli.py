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


def test_ntk_krylov_default_json(cli, model_file):
    """Above KRYLOV_MIN_POINTS the default (--dtype auto) reports the converged top of Theta's spectrum, its
    error bound and the rank bounds; the float64 run's eigenvalues lie within them."""
    from inrdiag.ntk.config import KRYLOV_MIN_POINTS

    args = ["ntk", model_file, "--grid", "34", "--json", "--top-k", "8"]
    assert 34 * 34 > KRYLOV_MIN_POINTS
    d = cli(*args).json()
    d64 = cli(*args, "--dtype", "float64").json()
    assert d["spectrum"] == "krylov" and d64["spectrum"] == "all" and len(d64["eigenvalues"]) == 34 * 34
    ev, ev64 = d["eigenvalues"], d64["eigenvalues"]
    assert 8 <= len(ev) < len(ev64) and d["decay"]["10"] == pytest.approx(d64["decay"]["10"], rel=1e-3)
    if len(ev) < 100:  # a fast-decaying spectrum: past float32's resolution (1e-6 lambda_1) nothing is reported
        assert d["decay"]["100"] is None and ev64[len(ev)] < 1e-6 * ev64[0]
        assert any("resolution of float32" in n for n in d["notes"])
    err = d["accuracy"]["eigenvalue_error"]
    assert err < 1e-4 and d["accuracy"]["solver"].startswith("block Krylov")
    for a, b in zip(ev, ev64):
        assert a - 1e-6 * ev64[0] <= b <= a + (err + 1e-6) * ev64[0]
    lo, hi = d["effective_rank_bounds"]
    assert lo * (1 - 1e-5) <= d64["effective_rank"] <= hi * (1 + 1e-5)  # slack: the float32 kernel's rounding
    assert d["numerical_rank"] == d64["numerical_rank"] and d["numerical_rank_bounds"] == [d["numerical_rank"]] * 2


def test_ntk_cli_defaults_are_the_engines():
    """Every default of the command comes from the engine's constants (never a retyped literal)."""
    from inrdiag.cli import _command
    from inrdiag.constants import DEFAULT_TOL
    from inrdiag.ntk import config

    params = {p.name: p.default for p in _command().commands["ntk"].params}
    assert params["top_k"] == config.DEFAULT_TOP_K and params["tol"] == DEFAULT_TOL
    assert params["method"] == config.DEFAULT_METHOD and params["dtype"] == config.DEFAULT_DTYPE
    assert params["device"] == config.DEFAULT_DEVICE and params["grid"] is None and params["seed"] == 0


def test_ntk_cli_is_the_engine_call(cli, model_file, tmp_path):
    """The command's JSON is ``run_ntk(model, NTKConfig(flags)).to_dict()`` (only the timings differ)."""
    import numpy as np
    from imageio.v3 import imwrite

    from inrdiag.ntk.analysis import run_ntk
    from inrdiag.ntk.config import DEFAULT_DTYPE, NTKConfig

    imwrite(tmp_path / "t.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    d = cli("ntk", model_file, "--grid", "8", "--json", "--target", tmp_path / "t.png", "--seed", "3").json()
    res = run_ntk(inrdiag.load(model_file), NTKConfig(grid=8, dtype=DEFAULT_DTYPE, seed=3), target=tmp_path / "t.png")
    mine = res.to_dict()
    d.pop("seconds"), mine.pop("seconds"), d.pop("schema_version"), d.pop("inrdiag_version")
    d["target"]["path"] = mine["target"]["path"]  # the same file, given as str / Path

    def same(a, b):
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, float) or isinstance(b, float):
            return b is not None and a == pytest.approx(b, rel=1e-9, abs=1e-300)
        return a == b

    assert same(d, mine)


@pytest.mark.parametrize("args,msg", [
    (["--fit-steps", "5"], "--target"),
    (["--lr", "0.1"], "--target"),
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
