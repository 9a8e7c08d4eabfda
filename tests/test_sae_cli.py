"""inrdiag sae from the command line: targets from provenance, outputs, determinism, bad input."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import tiny_model
from tolerances import assert_close

import inrdiag

SAE = ["--atoms", "16", "--k", "2", "--steps", "5", "--batch-size", "32"]


@pytest.fixture
def fitted(cli, tmp_path):
    img = tmp_path / "t.png"
    iio.imwrite(img, (np.random.default_rng(0).random((12, 12)) * 255).astype(np.uint8))
    out = tmp_path / "m.safetensors"
    r = cli("fit", img, "--init", "default", "--depth", "2", "--width", "8", "--steps", "40", "--lr", "1e-2",
            "--size", "10", "-o", out)  # fmt: skip
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
    # the numbers are real: outputs inside [0, 1], a drop that is not 0, and it matches a plain recomputation
    assert 5 < m["model"] < 60 and m["spliced"] != m["model"]
    worst = d["ablation"]["most_harmful"][0]
    assert worst["drop"] > 0
    from inrdiag.fitting.targets import load_target, psnr
    from inrdiag.sae.analysis import layer_activations, splice_forward
    from inrdiag.sae.saelens import load_sae

    model = inrdiag.load(fitted).model
    sae = load_sae(out).sae
    t = load_target(tmp_path / "t.png", size=10)
    x = t.coords(dtype=torch.float32)
    with torch.no_grad():
        f = sae.encode(layer_activations(model, x, 1))
        f[:, worst["atom"]] = 0
        want = m["spliced"] - psnr(splice_forward(model, 1, sae.decode(f)), t.values)
    # float32 network, another order of the same sums: the drop's error is relative to the PSNR it is a
    # difference of
    assert_close(worst["drop"], want, torch.float32, scale=m["spliced"])
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
    assert "FVU" in r.out and "single-atom ablations (3 atoms" in r.out and "spliced in at the inlet (layer 0)" in r.out
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


def test_sae_default_target_shape_and_identity(cli, tmp_path, monkeypatch):
    """A non-square fit is scored on its own grid; a same-named but different file in the working folder
    is not taken for the fitted target."""
    rng = np.random.default_rng(2)
    d = tmp_path / "fit"
    d.mkdir()
    iio.imwrite(d / "rect.png", (rng.random((6, 10)) * 255).astype(np.uint8))
    monkeypatch.chdir(d)
    r = cli(
        "fit", "rect.png", "--init", "default", "--depth", "2", "--width", "8", "--steps", "5", "-o", "r.safetensors"
    )
    assert r.code == 0, r.err
    r = cli("sae", "r.safetensors", "--layer", "0", *SAE, "--json")
    assert r.code == 0, r.err
    assert r.json()["grid"]["shape"] == [6, 10]
    other = tmp_path / "other"
    other.mkdir()
    iio.imwrite(other / "rect.png", np.zeros((6, 10), np.uint8))  # same name, other pixels
    monkeypatch.chdir(other)
    r = cli("sae", d / "r.safetensors", "--layer", "0", *SAE, "--json")
    assert r.code == 0, r.err
    assert r.json()["target"]["path"] == str(d / "rect.png")
    (d / "rect.png").write_bytes((other / "rect.png").read_bytes())  # now no file matches the fit
    _one_line_error(cli("sae", d / "r.safetensors", "--layer", "0", *SAE), "differ from the fitted file")
    _one_line_error(cli("sae", d / "r.safetensors", "--layer", "0", *SAE, "--grid", "1"), "--grid")


def test_sae_output_clash_and_foreign_files(cli, fitted, tmp_path):
    same = tmp_path / "same.png"
    _one_line_error(cli("sae", fitted, "--layer", "1", *SAE, "-o", same, "--atoms-png", same), "same path")
    assert not same.exists()
    out = tmp_path / "s"
    assert cli("sae", fitted, "--layer", "1", *SAE, "-o", out).code == 0
    base = cli("sae", fitted, "--layer", "1", "--sae", out, "--json").json()
    assert any("training flags ignored" in n for n in base["notes"])
    assert any(
        "not on layer 0" in n for n in cli("sae", fitted, "--layer", "0", "--sae", out, "--json").json()["notes"]
    )
    # a SAELens < 6.0 TopK config (architecture "standard", activation_fn_str "topk") still loads as TopK
    cfg_path = out / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    old = {**cfg, "architecture": "standard", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2}}
    del old["k"]
    cfg_path.write_text(json.dumps(old))
    r = cli("sae", fitted, "--layer", "1", "--sae", out, "--json")
    assert r.code == 0, r.err
    assert r.json()["metrics"] == base["metrics"] and r.json()["sae"]["kind"] == "topk"
    for bad, msg in [({**cfg, "k": 99}, "outside"), ({**cfg, "k": None}, "integer k"), ([1, 2], "JSON object"),
                     ({**cfg, "normalize_activations": "layer_norm"}, "not supported")]:  # fmt: skip
        cfg_path.write_text(json.dumps(bad))
        _one_line_error(cli("sae", fitted, "--layer", "1", "--sae", out), msg)
    cfg_path.write_text(json.dumps(cfg))
    from safetensors.torch import load_file, save_file

    w = load_file(out / "sae_weights.safetensors")
    save_file({**w, "W_dec": w["W_dec"][:, :3].contiguous()}, out / "sae_weights.safetensors")
    _one_line_error(cli("sae", fitted, "--layer", "1", "--sae", out), "W_dec has shape")


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from inrdiag.cli.sae import sae_cmd
    from inrdiag.sae.config import SHOW_ROWS
    from inrdiag.sae.model import SAEConfig

    params = inspect.signature(sae_cmd).parameters
    lib = SAEConfig()
    for name in ("atoms", "kind", "k", "l1", "steps", "batch_size", "lr", "seed"):
        assert params[name].default == getattr(lib, name), name
    assert params["show_n"].default == SHOW_ROWS
    src = inspect.getsource(sae_cmd)  # thin: the command hands the work to the engine
    assert "run_sae(" in src and "resolve_target" not in src and "sha256" not in src


def test_run_sae_from_python_matches_the_command(cli, fitted, tmp_path):
    """The notebook path: inrdiag.load + run_sae (target from provenance, sha256 checked) gives the CLI's numbers."""
    from inrdiag.sae.config import SAEConfig
    from inrdiag.sae.run import ResolvedTarget, SAERun, resolve_target, run_sae

    cfg = SAEConfig(atoms=16, k=2, steps=5, batch_size=32)
    loaded = inrdiag.load(fitted)
    run = run_sae(loaded, 1, config=cfg, out=tmp_path / "s", writes={"--atoms-png": tmp_path / "a.png"})
    assert isinstance(run, SAERun) and run.target.path == str(tmp_path / "t.png") and len(run.saved) == 2
    d = run.to_dict()
    r = cli("sae", fitted, "--layer", "1", *SAE, "--json")
    assert r.code == 0, r.err
    assert d["metrics"] == r.json()["metrics"] and d["sae"] == r.json()["sae"]
    assert any(n.startswith("target: the fitted target") for n in run.report.notes)
    again = run_sae(loaded, 1, sae=tmp_path / "s")
    assert again.to_dict()["metrics"] == d["metrics"] and again.report.losses == []
    assert again.report.source is not None and again.report.source["written_by"] == "inrdiag"
    res = resolve_target(loaded)
    assert isinstance(res, ResolvedTarget) and res.target.shape == (10, 10)
    (tmp_path / "t.png").write_bytes(b"not the fitted file")
    with pytest.raises(inrdiag.InrdiagError, match="differ from the fitted file"):
        resolve_target(loaded)
    # writes that clash with an input or the -o folder are refused before any work
    with pytest.raises(inrdiag.InrdiagError, match="is the input file"):
        run_sae(loaded, 1, config=cfg, writes={"--atoms-png": fitted})
    with pytest.raises(inrdiag.InrdiagError, match="inside the -o folder"):
        run_sae(loaded, 1, config=cfg, out=tmp_path / "o", writes={"--atoms-png": tmp_path / "o" / "a.png"})
    with pytest.raises(inrdiag.InrdiagError, match="records no target"):
        run_sae(tiny_model(dtype=torch.float32), 0, config=cfg)
    with pytest.raises(inrdiag.InrdiagError, match="--seed"):
        run_sae(loaded, 1, config=SAEConfig(seed=-1))


def test_sae_reads_a_foreign_saelens_file(cli, fitted, tmp_path):
    """A SAELens file that inrdiag did not write (no metadata.inrdiag) is analysed as it is."""
    out = tmp_path / "s"
    assert cli("sae", fitted, "--layer", "1", *SAE, "-o", out).code == 0
    cfg_path = out / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["metadata"] = {"model_name": "elsewhere", "hook_name": "blocks.0.hook_resid_post"}
    cfg["dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg))
    r = cli("sae", fitted, "--layer", "1", "--sae", out, "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["sae"]["steps"] == 0 and d["sae"]["atoms"] == 16 and d["sae"]["k"] == 2
    r = cli("sae", fitted, "--layer", "1", "--sae", out)
    assert r.code == 0 and "loaded" in r.out
    for bad, msg in [({**cfg, "architecture": ["topk"]}, "must be strings"), ({**cfg, "k": 2.5}, "integer k")]:
        cfg_path.write_text(json.dumps(bad))
        _one_line_error(cli("sae", fitted, "--layer", "1", "--sae", out), msg)
