"""Studies: compare over folders, resumable run folders, --jobs workers, torch.distributed (2 gloo ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tolerances import assert_close

import inrdiag
from inrdiag.errors import InrdiagError
from inrdiag.fitting.loop import FitConfig
from inrdiag.study.distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
TINY = FitConfig(depth=1, width=8, steps=5, lr=0.01, device="cpu", curve_points=5)
FAST = ("--depth", "1", "--width", "8", "--steps", "5", "--lr", "0.01", "--device", "cpu")


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        iio.imwrite(d / f"im{i}.png", rng.integers(0, 256, (8, 8)).astype(np.uint8))
    return d


def _numbers(rep) -> dict:
    """A report without wall-clock times (the only numbers that may differ between runs)."""
    d = rep.to_dict() if hasattr(rep, "to_dict") else rep
    d = json.loads(json.dumps(d))
    for r in d.get("runs", []):
        r.pop("seconds")
    for s in d.get("summary", []):
        s.pop("seconds_per_run")
    for r in d.get("rows", []):
        r.pop("seconds", None)
    d.pop("run_dir", None)
    d.pop("outputs", None)
    return d


def test_resume_after_stop_gives_the_uninterrupted_report(images, tmp_path):
    inits = ["default", "rank-expand"]
    full, o1 = inrdiag.compare_folder(images, inits, 2, TINY, out=str(tmp_path / "a"))
    assert o1.complete and o1.ran == 16 and isinstance(full, inrdiag.CompareStudy)
    part, o2 = inrdiag.compare_folder(images, inits, 2, TINY, out=str(tmp_path / "b"), max_jobs=5)
    assert part is None and o2.ran == 5 and len(list((tmp_path / "b" / "jobs").glob("*.json"))) == 5
    again, o3 = inrdiag.compare_folder(images, inits, 2, TINY, out=str(tmp_path / "b"))
    assert o3.done_before == 5 and o3.ran == 11
    assert _numbers(again) == _numbers(full)
    # Nothing left to run: a rerun only reports; the report also rebuilds from the folder alone.
    _, o4 = inrdiag.compare_folder(images, inits, 2, TINY, out=str(tmp_path / "b"))
    assert o4.ran == 0
    kind, rebuilt = inrdiag.load_study(tmp_path / "b")
    assert kind == "compare" and _numbers(rebuilt) == _numbers(full)
    # A changed flag is refused with the field named; so is a changed signal.
    from dataclasses import replace

    with pytest.raises(InrdiagError, match=r"fit\.steps = 5, this command has 6"):
        inrdiag.compare_folder(images, inits, 2, replace(TINY, steps=6), out=str(tmp_path / "b"))
    with pytest.raises(InrdiagError, match="seeds = 2, this command has 3"):
        inrdiag.compare_folder(images, inits, 3, TINY, out=str(tmp_path / "b"))
    iio.imwrite(images / "im0.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(InrdiagError, match="sha256"):
        inrdiag.compare_folder(images, inits, 2, TINY, out=str(tmp_path / "b"))


def test_compare_folder_cli_outputs(cli, images, tmp_path):
    run = tmp_path / "run"
    svg, pdf, csv = tmp_path / "p.svg", tmp_path / "p.pdf", tmp_path / "r.csv"
    r = cli("compare", images, *FAST, "--inits", "default,rank-expand", "--seeds", "2", "--out", run,
            "--max-jobs", "3", "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert r.json()["complete"] is False and r.json()["done"] == 3
    r = cli("compare", images, *FAST, "--inits", "default,rank-expand", "--seeds", "2", "--out", run, "--json",
            "--plot", svg, "--csv", csv)  # fmt: skip
    assert r.code == 0, r.err
    data = r.json()
    assert data["kind"] == "compare-study" and data["baseline"] == "default" and len(data["runs"]) == 16
    assert data["paired"][0]["init"] == "rank-expand" and data["paired"][0]["n"] == 4
    assert b"<svg" in svg.read_bytes()[:400]
    assert csv.read_text().splitlines()[0].startswith("signal,init,seed,metric_name,metric")
    assert len(csv.read_text().splitlines()) == 17
    r = cli("compare", "--from", run, "--baseline", "rank-expand", "--plot", pdf)
    assert r.code == 0, r.err
    assert "paired against rank-expand" in r.out and "Wilcoxon" in r.out and "wrote plot" in r.out
    assert pdf.read_bytes()[:4] == b"%PDF"
    r = cli("compare", images, *FAST, "--inits", "default,rank-expand", "--seeds", "2", "--out", run, "--lr", "0.02")
    assert r.code == 2 and "fit.lr = 0.01, this command has 0.02" in r.err and r.err.count("\n") == 1
    for args, msg in ((["--baseline", "siren"], "--baseline"), (["--max-jobs", "2"], "--out RUN_DIR"),
                      (["--jobs", "0"], "--jobs")):  # fmt: skip
        r = cli("compare", images, *FAST, "--inits", "default,rank-expand", *args)
        assert r.code == 2 and msg in r.err and r.err.count("\n") == 1, r.err
    r = cli("compare", "--from", tmp_path)
    assert r.code == 2 and "not a run folder" in r.err


def test_single_file_study_keeps_the_table(cli, images, tmp_path):
    img = images / "im1.png"
    plain = cli("compare", img, *FAST, "--inits", "default,rank-expand", "--seeds", "2", "--json")
    assert plain.code == 0, plain.err
    r = cli("compare", img, *FAST, "--inits", "default,rank-expand", "--seeds", "2", "--json", "--out", tmp_path / "r")
    assert r.code == 0, r.err
    assert _numbers(r.json()) == _numbers(plain.json())
    again = cli("compare", "--from", tmp_path / "r", "--json")
    a, b = _numbers(again.json()), _numbers(plain.json())
    a["config"].pop("device"), b["config"].pop("device")
    assert a == b


def _env_ranks(args: list[str], world: int = 2, timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Run ``python -m inrdiag ARGS`` as ``world`` gloo ranks (the environment torchrun sets)."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "PYTHONPATH": str(ROOT), "COLUMNS": "200", "INRDIAG_DIST_TIMEOUT": str(timeout)}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "inrdiag", *args], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


def test_two_gloo_ranks_and_two_workers_equal_one_process(cli, images, tmp_path):
    args = ["compare", str(images), *FAST, "--inits", "default,rank-expand", "--seeds", "1", "--json"]
    one = cli(*args)
    assert one.code == 0, one.err
    ranks = _env_ranks([*args, "--out", str(tmp_path / "dist")])
    assert [p.returncode for p in ranks] == [0, 0], ranks[0].stderr + ranks[1].stderr
    assert ranks[1].stdout == ""  # rank 0 alone prints
    assert _numbers(json.loads(ranks[0].stdout)) == _numbers(one.json())
    recs = [json.loads(f.read_text()) for f in (tmp_path / "dist" / "jobs").glob("*.json")]
    assert len(recs) == 8 and {r["run"]["rank"] for r in recs} == {0, 1}
    workers = cli(*args, "--jobs", "2")
    assert workers.code == 0, workers.err
    assert _numbers(workers.json()) == _numbers(one.json())


@pytest.fixture
def cohort_dir(tmp_path):
    d = tmp_path / "cohort"
    d.mkdir()
    yy, xx = np.mgrid[0:12, 0:12] / 11.0
    for i in range(5):
        img = 0.5 + 0.4 * np.sin((i + 1) * xx * 3 + i) * np.cos(yy * (i + 2))
        iio.imwrite(d / f"img_{i}.png", (np.clip(img, 0, 1) * 255).astype(np.uint8))
    return d


COHORT = ["--depth", "3", "--width", "16", "-K", "2", "--size", "12", "--lr", "1e-3", "--device", "cpu"]


def test_cohort_train_two_gloo_ranks_equal_one_process(cli, cohort_dir, tmp_path):
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    r = cli("cohort-train", cohort_dir, "-o", one, *COHORT, "--steps", "30", "--json")
    assert r.code == 0, r.err
    ranks = _env_ranks(["cohort-train", str(cohort_dir), "-o", str(two), *COHORT, "--steps", "30", "--json"])
    assert [p.returncode for p in ranks] == [0, 0], ranks[0].stderr + ranks[1].stderr
    d1, d2 = r.json(), json.loads(ranks[0].stdout)
    assert d1["images"] == d2["images"] and d2["psnr"] == pytest.approx(d1["psnr"], abs=1e-4)
    from inrdiag.cohort.train import load_cohort

    m1 = load_cohort(one).models
    m2 = load_cohort(two).models
    for a, b in zip(m1, m2):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb
            assert_close(va, vb, torch.float32, "exact")


def test_cohort_memory_estimate_refuses_before_allocating(cli, cohort_dir, tmp_path):
    r = cli("cohort-train", cohort_dir, "-o", tmp_path / "c.safetensors", "--size", "5000", "--steps", "1")
    assert r.code == 2 and "--size" in r.err and "GiB" in r.err and r.err.count("\n") == 1, r.err


def test_freeze_study_splits_seeds_resume(cli, cohort_dir, tmp_path):
    sweep = [*COHORT, "--cohort-steps", "5", "--steps", "4", "--holdout", "1"]
    run = tmp_path / "run"
    r = cli("freeze-sweep", cohort_dir, *sweep, "--splits", "2", "--seeds", "2", "--out", run, "--max-jobs", "1",
            "--json")  # fmt: skip
    assert r.code == 0 and r.json()["complete"] is False, r.err
    r = cli("freeze-sweep", cohort_dir, *sweep, "--splits", "2", "--seeds", "2", "--out", run, "--json",
            "--plot", tmp_path / "f.png")  # fmt: skip
    assert r.code == 0, r.err
    d = r.json()
    assert d["kind"] == "freeze-study" and d["jobs"] == 4 and len(d["splits"]) == 2
    assert [p["baseline"] for p in d["paired"]] == ["full fine-tuning (k=0)", "measured best k", "scratch"]
    assert d["paired"][0]["n"] == 2  # one held-out image per split, seed-averaged
    r2 = cli("freeze-sweep", "--from", run)
    assert r2.code == 0 and "freeze at k*" not in r2.err and "k* equals the measured best k" in r2.out
    r3 = cli("freeze-sweep", cohort_dir, *sweep, "--splits", "2", "--seeds", "2", "--out", run, "--steps", "5")
    assert r3.code == 2 and "steps = 4, this command has 5" in r3.err


def test_single_freeze_job_equals_plain_sweep(cli, cohort_dir, tmp_path):
    sweep = [*COHORT, "--cohort-steps", "5", "--steps", "4", "--holdout", "1", "--json"]
    plain = cli("freeze-sweep", cohort_dir, *sweep, "-o", tmp_path / "c.safetensors")  # the in-process path
    study = cli("freeze-sweep", cohort_dir, *sweep, "--out", tmp_path / "r")
    assert plain.code == 0 and study.code == 0, plain.err + study.err
    a, b = plain.json(), study.json()
    assert a["rows"] == b["rows"] and a["stable_ranks"] == b["stable_ranks"] and a["test_images"] == b["test_images"]


def test_compare_stays_a_function_after_submodule_imports():
    import importlib

    for mod in ("inrdiag.study.single", "inrdiag.study.compare_study", "inrdiag.study.api", "inrdiag.fitting.loop"):
        importlib.import_module(mod)
    assert callable(inrdiag.compare) and callable(inrdiag.compare_folder) and callable(inrdiag.load_study)
    assert inrdiag.compare.__module__ == "inrdiag.study.single"


def test_study_apis_range_check_their_seeds(images, tmp_path):
    """Seeds outside [0, 2^32 - 1] (inrdiag.seeds) are refused before any job runs: the first seed, the
    last of ``seeds`` consecutive ones, and a freeze study's recipe seed."""
    from inrdiag.cohort.train import CohortRecipe
    from inrdiag.seeds import SEED_MAX

    cfg = FitConfig(depth=2, width=8, steps=1, device="cpu")
    with pytest.raises(InrdiagError, match=r"--seed must be in \[0, 4294967295\].*got -1"):
        inrdiag.compare_folder(images, ["default"], seeds=1, config=replace(cfg, seed=-1))
    with pytest.raises(InrdiagError, match=r"the last seed \(--seed 4294967294 \+ --seeds 3 - 1\).*got 4294967296"):
        inrdiag.compare_folder(images, ["default"], seeds=3, config=replace(cfg, seed=SEED_MAX - 1))
    with pytest.raises(InrdiagError, match=r"seed.* must be in .*got 4294967296"):
        inrdiag.freeze_folder(sorted(images.iterdir()), CohortRecipe(seed=SEED_MAX + 1), out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
