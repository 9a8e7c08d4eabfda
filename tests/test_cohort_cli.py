"""cohort-train / freeze-sweep from the command line: outputs, JSON, bad input."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

SMALL = ["--depth", "2", "--width", "8", "--size", "8"]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        iio.imwrite(d / f"{i}.png", rng.integers(0, 255, (10, 10), dtype=np.uint8))
    iio.imwrite(d / "rgb.png", rng.integers(0, 255, (9, 11, 3), dtype=np.uint8))
    (d / "readme.md").write_text("hi")
    return d


def test_cohort_train_then_sweep(cli, folder, tmp_path):
    out = tmp_path / "c.safetensors"
    r = cli("cohort-train", folder, "-o", out, *SMALL, "--steps", "5", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert len(data["images"]) == 5 and any("readme.md" in s for s in data["skipped"])
    assert any("gray -> RGB" in s for s in data["resized"])
    assert cli("cohort-train", folder, "-o", out, *SMALL, "--steps", "5").code == 2  # exists
    info = cli("info", out, "--json").json()
    assert info["cohort"]["heads"] == 5 and info["cohort"]["shared_layers"] == 2
    rank = cli("rank", out, "--grid", "6", "--json").json()
    srs = [layer["weight_stable_rank"] for layer in rank["layers"][:2]]
    assert rank["recommended_freeze_depth"] == 1 + srs.index(max(srs))
    test_dir = tmp_path / "held"
    test_dir.mkdir()
    iio.imwrite(test_dir / "new.png", np.zeros((10, 10, 3), np.uint8))
    plot = tmp_path / "sweep.png"
    r = cli("freeze-sweep", folder, "--cohort", out, "--test", test_dir, "--steps", "4", "--json", "--plot", plot)
    assert r.code == 0, r.err
    sweep = r.json()
    assert sweep["test_images"] == ["new.png"] and [row["k"] for row in sweep["rows"]] == [None, 0, 1, 2]
    assert plot.exists()
    r = cli("freeze-sweep", folder, "--cohort", out, "--test", test_dir, "--steps", "4", "--backbone", "ff")
    assert r.code == 2 and "backbone" in r.err


def test_sweep_trains_cohort_on_split(cli, folder):
    r = cli("freeze-sweep", folder, *SMALL, "--backbone", "ff", "--cohort-steps", "3", "--steps", "3", "--holdout", "1")
    assert r.code == 0, r.err
    assert "recommended k*" in r.out and "scratch" in r.out


@pytest.mark.parametrize("setup,args,msg", [
    ("empty", [], "no images"),
    ("single", [], "at least 2"),
    ("ok", ["--shared-layers", "9"], "shared-layers 9"),
    ("ok", ["--holdout", "9"], "--holdout"),
    ("ok", ["--lr", "-1"], "--lr"),
    ("ok", ["--lr", "0"], "--lr"),
    ("ok", ["--lr", "nan"], "--lr"),
    ("ok", ["--steps", "0"], "--steps"),
    ("ok", ["-o", "same.png", "--plot", "same.png"], "both write"),
])  # fmt: skip
def test_sweep_bad_input(cli, tmp_path, folder, setup, args, msg):
    d = {"ok": folder, "empty": tmp_path / "empty", "single": tmp_path / "single"}[setup]
    if setup != "ok":
        d.mkdir()
    if setup == "single":
        iio.imwrite(d / "a.png", np.zeros((4, 4), np.uint8))
    args = [str(tmp_path / a) if a == "same.png" else a for a in args]
    r = cli("freeze-sweep", d, *SMALL, "--cohort-steps", "2", *(args if "--steps" in args else ["--steps", "2", *args]))
    assert r.code == 2 and msg in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert "training" not in r.err and not (tmp_path / "same.png").exists()  # refused before any work


def test_cohort_train_divergence_is_one_error_line(cli, folder, tmp_path):
    """The progress bar (cli.app.progress_bar) leaves nothing behind when training fails."""
    r = cli("cohort-train", folder, "-o", tmp_path / "c.safetensors", *SMALL, "--steps", "3", "--lr", "1e30")
    assert r.code == 2 and r.err.startswith("error: ") and r.err.count("\n") == 1, repr(r.err)
    assert "lower --lr" in r.err and not (tmp_path / "c.safetensors").exists()
