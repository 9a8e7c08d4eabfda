"""Issue 11: bad input gets one line and exit 2, a bug is never dressed as bad input, inputs are never destroyed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import tiny_model

import inrdiag

ROOT = Path(__file__).resolve().parents[1]


def _py(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_fit_is_callable_after_its_module_is_imported():
    """Issue 11 item 0b: the function ``inrdiag.fit`` and its module have different names."""
    code = (
        "import inrdiag, inspect\n"
        "inrdiag.FitConfig\n"
        "import inrdiag.fitting.loop\n"
        "print(inspect.isfunction(inrdiag.fit), inspect.isfunction(inrdiag.fit))"
    )
    assert _py(code).split() == ["True", "True"]


# ---------------------------------------------------------------- exit codes
@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.safetensors"
    inrdiag.save(tiny_model(dtype=torch.float32), path)
    return path


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    iio.imwrite(path, np.random.default_rng(0).integers(0, 256, size=(16, 16, 3)).astype(np.uint8))
    return path


def _one_line(r) -> None:
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err


@pytest.mark.parametrize(
    "exc, code, text",
    [
        (ZeroDivisionError("float division by zero"), 70, "internal error"),
        (KeyError("linears.3.weight"), 70, "internal error"),
        (RecursionError("maximum recursion depth exceeded"), 70, "internal error"),
        (OSError(12345, "odd device state"), 70, "internal error"),
        (MemoryError(), 2, "out of memory"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), 2, "out of memory"),
        (PermissionError(13, "Permission denied", "/x/y.png"), 2, "/x/y.png: Permission denied"),
        (FileNotFoundError(2, "No such file or directory", "/nope/m.pt"), 2, "/nope/m.pt"),
        (OSError(28, "No space left on device"), 2, "No space left on device"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_every_exception_class_has_its_exit_code(cli, model_file, monkeypatch, exc, code, text):
    def boom(*a, **k):
        raise exc

    monkeypatch.setattr("inrdiag.cli.diagnose.load_model", boom)
    r = cli("info", model_file)
    assert r.code == code and text in r.err, (r.code, r.err)
    _one_line(r)
    if code == 70:
        assert type(exc).__name__ in r.err and "INRDIAG_DEBUG=1" in r.err


def test_bad_input_and_usage_exit_2(cli, model_file):
    r = cli("rank", model_file, "--grid", "1")
    assert r.code == 2
    _one_line(r)
    r = cli("rank", model_file, "--no-such-flag")
    assert r.code == 2
    _one_line(r)


def test_debug_prints_the_traceback_of_internal_errors(cli, model_file, monkeypatch):
    def boom(*a, **k):
        raise ZeroDivisionError("x")

    monkeypatch.setattr("inrdiag.cli.diagnose.load_model", boom)
    monkeypatch.setenv("INRDIAG_DEBUG", "1")
    r = cli("info", model_file)
    assert r.code == 70 and "Traceback" in r.err and r.err.splitlines()[-1].startswith("error: internal error")


def test_exit_codes_are_documented():
    readme = (ROOT / "README.md").read_text()
    assert "**Exit codes.**" in readme and "`70`" in readme and "INRDIAG_DEBUG=1" in readme
    out = _py("from inrdiag.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass")
    assert "70 internal error" in " ".join(out.split()) and "130 interrupted" in out


def test_signal_handlers_are_restored_after_a_command(cli, model_file):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cli("info", model_file)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_mid_fit_leaves_no_partial_output(tmp_path, sig, code, word):
    """A real signal to a real process mid-fit: one line, 128 + signum, the earlier output untouched, no temp file."""
    img = tmp_path / "img.png"
    iio.imwrite(img, np.random.default_rng(0).integers(0, 256, size=(32, 32, 3)).astype(np.uint8))
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"earlier output")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "inrdiag", "fit", str(img), "--steps", "10000000", "--width", "16", "--depth", "1",
           "--device", "cpu", "--threads", "1", "-o", str(out), "--recon", str(tmp_path / "r.png"), "--force"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    time.sleep(1.0)
    deadline = time.time() + 60  # wait until the fit loop runs (torch imported, CPU time accumulating)
    while time.time() < deadline and _cpu_seconds(proc.pid) < 4.0:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.decode() == f"error: {word}\n"
    assert out.read_bytes() == b"earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png", "out.safetensors"]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- inputs protected
FAST = ("--depth", "1", "--width", "8", "--steps", "3", "--device", "cpu")


@pytest.mark.parametrize("flag", ["-o", "--recon", "--plot"])
def test_fit_never_writes_onto_its_target(cli, image, tmp_path, flag):
    before = image.read_bytes()
    link = tmp_path / "link.png"
    link.symlink_to(image)
    hard = tmp_path / "hard.png"
    os.link(image, hard)
    for path in (image, link, hard, tmp_path / "." / "img.png"):
        r = cli("fit", image, *FAST, flag, path, "--force")
        assert r.code == 2 and "is the input file" in r.err, r.err
        _one_line(r)
    assert image.read_bytes() == before and link.is_symlink()


def test_other_commands_never_write_onto_an_input(cli, model_file, image, tmp_path):
    before = model_file.read_bytes()
    for args in (("reinit", model_file, "-o", model_file), ("rank", model_file, "--plot", model_file),
                 ("ntk", model_file, "--plot", model_file), ("ntk", model_file, "--target", image, "--plot", image),
                 ("sae", model_file, "--layer", "0", "--atoms-png", model_file),
                 ("compare", image, "--plot", image)):  # fmt: skip
        r = cli(*args, "--force")
        # a --plot onto the .safetensors input is refused already for its extension (plots are png/pdf/svg)
        assert r.code == 2 and ("is the input file" in r.err or "give a .png, .pdf or .svg" in r.err), (args, r.err)
        _one_line(r)
    assert model_file.read_bytes() == before


def test_sae_output_folder_is_not_its_input_folder(cli, tmp_path):
    from inrdiag.sae.model import SAEConfig, make_sae
    from inrdiag.sae.saelens import save_sae

    mf = tmp_path / "m.safetensors"
    inrdiag.save(tiny_model(dtype=torch.float32, hidden=(8, 8)), mf)
    d = tmp_path / "s"
    save_sae(make_sae(8, 16, "topk", 2), SAEConfig(atoms=16, k=2), d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    r = cli("sae", mf, "--layer", "0", "--sae", d, "-o", d, "--force", "--target", tmp_path / "nope.png")
    assert r.code == 2 and "is the input file" in r.err, r.err
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


@pytest.mark.parametrize("out, text", [("/proc/x.png", "not writable"), ("/nonexistent/dir/x", "does not exist")])
def test_unwritable_output_refused_before_the_work(cli, image, out, text):
    t0 = time.perf_counter()
    r = cli("fit", image, "--steps", "100000", "--device", "cpu", "-o", out)
    assert r.code == 2 and text in r.err and out in r.err, r.err
    _one_line(r)
    assert time.perf_counter() - t0 < 10


def test_unwritable_folder_refused_for_a_library_save(tmp_path):
    from inrdiag.errors import InrdiagError

    with pytest.raises(InrdiagError, match="not writable"):
        inrdiag.save(tiny_model(), "/proc/m.safetensors")


def test_tilde_expanded_in_user_paths(cli, image, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    r = cli("fit", "~/img.png", *FAST, "--recon", "~/r.png", "-o", "~/m.safetensors", "--json")
    assert r.code == 0, r.err
    assert (tmp_path / "r.png").is_file() and (tmp_path / "m.safetensors").is_file()
    r = cli("info", "~/m.safetensors", "--json")
    assert r.code == 0, r.err


def test_library_errors_do_not_only_say_pass_force(tmp_path):
    from inrdiag.errors import OutputExistsError

    p = tmp_path / "m.safetensors"
    inrdiag.save(tiny_model(), p)
    with pytest.raises(OutputExistsError, match="force=True"):
        inrdiag.save(tiny_model(), p)


def test_atomic_write_interrupted_keeps_the_earlier_file(tmp_path):
    from inrdiag.cli import Interrupted
    from inrdiag.files import atomic_write

    p = tmp_path / "out.bin"
    p.write_bytes(b"earlier")

    def write(tmp):
        Path(tmp).write_bytes(b"half")
        raise Interrupted(signal.SIGTERM)

    with pytest.raises(Interrupted):
        atomic_write(p, write, force=True)
    assert p.read_bytes() == b"earlier" and [x.name for x in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_dir_replaces_the_folder_as_a_whole(tmp_path):
    from inrdiag.errors import InrdiagError, OutputExistsError
    from inrdiag.files import atomic_dir

    d = tmp_path / "sae"
    names = ["a.bin", "b.json"]

    def write(tag: bytes, force=False, fail=False):
        with atomic_dir(d, names, force) as tmp:
            assert tmp.parent == d.parent  # the temp folder is beside its output
            (tmp / "a.bin").write_bytes(tag)
            if fail:
                raise Interrupted(signal.SIGINT)
            (tmp / "b.json").write_bytes(tag)

    from inrdiag.cli import Interrupted

    write(b"one")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == {"a.bin": b"one", "b.json": b"one"}
    with pytest.raises(OutputExistsError, match="force=True"):
        write(b"two")
    with pytest.raises(Interrupted):
        write(b"two", force=True, fail=True)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == {"a.bin": b"one", "b.json": b"one"}
    write(b"three", force=True)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == {"a.bin": b"three", "b.json": b"three"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no temp or set-aside folder left
    (d / "mine.txt").write_text("user data")
    with pytest.raises(InrdiagError, match="holds other files"):
        write(b"four", force=True)
    assert (d / "mine.txt").read_text() == "user data"


def test_concurrent_sae_saves_never_mix_their_files(tmp_path):
    """Issue 11 item 3: two `save_sae(..., force=True)` at once left one run's cfg.json beside the other's weights."""
    import threading

    from inrdiag.sae.model import SAEConfig, make_sae
    from inrdiag.sae.saelens import load_sae, save_sae

    d = tmp_path / "s"
    saes = [make_sae(4, 8, "topk", k) for k in (1, 2, 3, 4)]
    errors: list[BaseException] = []

    def run(sae):
        try:
            for _ in range(10):
                save_sae(sae, SAEConfig(atoms=8, k=sae.k), d, force=True)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in saes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    loaded = load_sae(d)
    back, cfg = loaded.sae, loaded.cfg
    mine = saes[cfg["k"] - 1]
    assert torch.equal(back.W_enc, mine.W_enc)  # weights and cfg.json from one run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


# ---------------------------------------------------------------- targets and grids
def _png_header_only(path: Path, h: int, w: int) -> None:
    """A PNG whose header declares h x w 8-bit RGB, with no pixel data (decoding it would fail)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_huge_png_refused_from_its_header(cli, tmp_path, monkeypatch):
    """Issue 11 item 3b: a 12000^2 PNG was decoded (3.9 GB) before the guard ran."""
    p = tmp_path / "big.png"
    _png_header_only(p, 12000, 12000)
    monkeypatch.setattr("imageio.v3.imread", lambda *a, **k: pytest.fail("decoded before the size check"))
    r = cli("fit", p, *FAST)
    assert r.code == 2 and "exceed the limit" in r.err and "--size" in r.err, r.err
    _one_line(r)


def test_huge_volume_refused_from_its_header(cli, tmp_path, monkeypatch):
    """A .npy/.npz header declaring 800^3 voxels is refused before any data is read."""
    import zipfile

    with open(tmp_path / "v.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (800, 800, 800)})
    with zipfile.ZipFile(tmp_path / "v.npz", "w") as z, z.open("occupancy.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (800, 800, 800)})
    monkeypatch.setattr("numpy.load", lambda *a, **k: pytest.fail("decoded before the size check"))
    for name in ("v.npy", "v.npz"):
        r = cli("fit", tmp_path / name, *FAST)
        assert r.code == 2 and "512,000,000" in r.err, r.err
        _one_line(r)


def test_bad_npz_one_line_errors(cli, tmp_path):
    np.savez(tmp_path / "obj.npz", occupancy=np.array([None, 1], dtype=object))
    r = cli("fit", tmp_path / "obj.npz", *FAST)
    assert r.code == 2 and "Python objects" in r.err, r.err
    _one_line(r)
    np.savez(tmp_path / "crc.npz", occupancy=np.ones((4, 4, 4), np.uint8))
    data = bytearray((tmp_path / "crc.npz").read_bytes())
    at = data.index(b"\x01\x01\x01\x01")
    data[at] = 0  # one byte of the array changed: the stored CRC no longer matches
    (tmp_path / "crc.npz").write_bytes(bytes(data))
    r = cli("fit", tmp_path / "crc.npz", *FAST)
    assert r.code == 2 and "cannot read" in r.err, r.err
    _one_line(r)


def test_float_tiff_outside_unit_range_rescaled_and_said(cli, tmp_path):
    p = tmp_path / "f.tif"
    iio.imwrite(p, (np.random.default_rng(0).random((8, 8)) * 300 - 20).astype(np.float32))
    t = inrdiag.load_target(p)
    assert float(t.values.min()) == 0.0 and float(t.values.max()) == 1.0
    assert any("rescaled" in n and "outside [0, 1]" in n for n in t.notes)
    r = cli("fit", p, *FAST, "--json")
    assert r.code == 0, r.err
    assert any("rescaled" in n for n in r.json()["notes"])
    inside = tmp_path / "g.tif"
    iio.imwrite(inside, np.full((8, 8), 0.25, np.float32))
    assert inrdiag.load_target(inside).notes == []


def test_animated_gif_takes_the_first_frame_and_says_so(cli, tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    p = tmp_path / "a.gif"
    iio.imwrite(p, frames, loop=0, duration=100)
    t = inrdiag.load_target(p)
    assert t.shape == (8, 8) and any("3 frames" in n and "first" in n for n in t.notes)
    r = cli("fit", p, *FAST, "--json")
    assert r.code == 0 and any("3 frames" in n for n in r.json()["notes"]), r.err


@pytest.mark.parametrize("shape", [(0, 4), (), (4, -1), (2.5, 4), (True, 4), "ab", None, (4, "4")])
def test_make_grid_refuses_bad_shapes(shape):
    from inrdiag.errors import InrdiagError

    with pytest.raises(InrdiagError, match="grid shape"):
        inrdiag.make_grid(shape)


def test_make_grid_refuses_a_grid_too_large():
    from inrdiag.errors import ResourceError

    with pytest.raises(ResourceError, match="--grid"):
        inrdiag.make_grid((10**6, 10**6))


@pytest.mark.parametrize("n", [2.5, "8", True, 1, 0, -3])
def test_grid_shape_refuses_non_integers(n):
    from inrdiag.errors import InrdiagError
    from inrdiag.grid import grid_shape

    with pytest.raises(InrdiagError, match="--grid"):
        grid_shape(2, n)


@pytest.mark.parametrize("path, size, text", [(None, None, "file path"), ("", None, "non-empty"), (3, None, "file path"),
                                              ("x.png", 2.5, "--size"), ("x.png", 1, "--size"), ("x.png", True, "--size")])  # fmt: skip
def test_load_target_validates_its_arguments(tmp_path, path, size, text):
    from inrdiag.errors import InrdiagError

    if path == "x.png":
        path = tmp_path / "x.png"
        iio.imwrite(path, np.zeros((4, 4), np.uint8))
    with pytest.raises(InrdiagError, match=text):
        inrdiag.load_target(path, size)


# ---------------------------------------------------------------- seeds
@pytest.mark.parametrize("seed", ["18446744073709551616", "4294967296", "-1"])
def test_seed_outside_the_range_used_is_refused(cli, model_file, image, tmp_path, seed):
    """torch's CPU generator uses the low 32 bits of a seed: 0 and 2^32 gave identical fits, 2^64 overflowed."""
    for args in (("fit", image, *FAST), ("compare", image, *FAST), ("reinit", model_file, "-o", tmp_path / "r.st"),
                 ("ntk", model_file), ("sae", model_file, "--layer", "0"), ("cohort-train", tmp_path, "-o", tmp_path / "c"),
                 ("freeze-sweep", tmp_path)):  # fmt: skip
        r = cli(*args, "--seed", seed)
        assert r.code == 2 and "[0, 4294967295]" in r.err and seed in r.err, (args, r.err)
        _one_line(r)


def test_seed_range_in_the_library():
    from inrdiag.errors import InrdiagError

    for bad in (2**32, -1, 2**64, 1.5, "0", None, True):
        with pytest.raises(InrdiagError, match="seed"):
            inrdiag.build_model("default", 2, 1, 1, 4, seed=bad)
        with pytest.raises(InrdiagError, match="seed"):
            inrdiag.FitConfig(seed=bad).validate()
        with pytest.raises(InrdiagError, match="seed"):
            inrdiag.reinit_inlet(tiny_model(), "default", seed=bad)


def test_top_seed_differs_from_seed_zero():
    a = inrdiag.build_model("default", 2, 1, 1, 8, seed=0)
    b = inrdiag.build_model("default", 2, 1, 1, 8, seed=2**32 - 1)
    c = inrdiag.build_model("default", 2, 1, 1, 8, seed=2**32 - 1)
    assert not torch.equal(a.linears[0].weight, b.linears[0].weight)
    assert torch.equal(b.linears[0].weight, c.linears[0].weight)


# ---------------------------------------------------------------- memory before allocation
def test_huge_width_refused_before_building(cli, image, monkeypatch):
    """Issue 11 item 3b: `fit --width 1000000000` was OOM-killed after 50 s."""
    monkeypatch.setattr(
        "inrdiag.models.mlp.CoordMLP.__init__", lambda *a, **k: pytest.fail("built before the estimate")
    )
    t0 = time.perf_counter()
    for args in (("--width", "1000000000"), ("--width", "1000000000", "--depth", "1"), ("--depth", "100000000")):
        r = cli("fit", image, "--device", "cpu", *args)
        assert r.code == 2 and "GiB" in r.err and "--width or --depth" in r.err, r.err
        _one_line(r)
    assert time.perf_counter() - t0 < 10


def test_build_model_refuses_a_model_too_large():
    from inrdiag.errors import ResourceError

    with pytest.raises(ResourceError, match="--width"):
        inrdiag.build_model("default", 2, 1, 3, 10**9)


# ---------------------------------------------------------------- ntk
def test_ntk_fit_steps_or_lr_without_target_refused(cli, model_file):
    for args in (("--fit-steps", "5"), ("--lr", "0.1")):
        r = cli("ntk", model_file, "--grid", "4", *args)
        assert r.code == 2 and "--target" in r.err, r.err
        _one_line(r)


def test_ntk_target_on_a_model_with_a_zero_kernel(cli, tmp_path, image):
    """All weights zero and no biases: every output is 0 and no parameter moves it (was a ZeroDivisionError)."""
    m = inrdiag.CoordMLP(inrdiag.ArchSpec(in_features=2, out_features=3, hidden=[8, 8], bias=False))
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    mf = tmp_path / "zero.safetensors"
    inrdiag.save(m, mf)
    r = cli("ntk", mf, "--target", image, "--grid", "8")
    assert r.code == 2 and "NTK is zero" in r.err and "--lr" in r.err, r.err
    _one_line(r)
    r = cli("ntk", mf, "--target", image, "--grid", "8", "--lr", "1", "--fit-steps", "2", "--json")
    assert r.code == 0, r.err


# ---------------------------------------------------------------- Python API validation
@pytest.mark.parametrize(
    "kw, text",
    [({"depth": 2.5}, "depth"), ({"width": "8"}, "width"), ({"steps": None}, "steps"), ({"lr": "x"}, "lr"),
     ({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size"), ({"init": None}, "init"),
     ({"init": "xavier"}, "xavier"), ({"threads": 1.5}, "threads"), ({"device": 3}, "device"),
     ({"holdout_stride": True}, "holdout_stride"), ({"tol": -1}, "tol"), ({"curve_points": 0}, "curve_points"),
     ({"tune_malloc": "yes"}, "tune_malloc")],
)  # fmt: skip
def test_fit_config_validates_types(kw, text):
    from inrdiag.errors import InrdiagError

    with pytest.raises(InrdiagError, match=text):
        inrdiag.FitConfig(**kw).validate()


def test_fit_and_build_model_validate_arguments(image):
    from inrdiag.errors import InrdiagError

    with pytest.raises(InrdiagError, match="Target"):
        inrdiag.fit(str(image))
    with pytest.raises(InrdiagError, match="FitConfig"):
        inrdiag.fit(inrdiag.load_target(image), {"steps": 3})
    with pytest.raises(InrdiagError, match="progress"):
        inrdiag.fit(inrdiag.load_target(image), inrdiag.FitConfig(steps=1), progress=3)
    for args in ((None, 2, 1, 1, 4), ("default", 2.0, 1, 1, 4), ("default", 2, 0, 1, 4), ("default", 2, 1, "3", 4)):
        with pytest.raises(InrdiagError):
            inrdiag.build_model(*args)
    loaded = inrdiag.load(_saved(tiny_model()))
    with pytest.raises(InrdiagError, match="loaded.model"):
        inrdiag.reinit_inlet(loaded, "default")
    with pytest.raises(InrdiagError, match="scheme"):
        inrdiag.reinit_inlet(loaded.model, None)


def _saved(model) -> Path:
    import tempfile

    d = Path(tempfile.mkdtemp())
    inrdiag.save(model, d / "m.safetensors")
    return d / "m.safetensors"


@pytest.mark.parametrize("bad", [None, 3, b"x.bin", ""])
def test_io_helpers_validate_paths(tmp_path, bad):
    from inrdiag.errors import InrdiagError
    from inrdiag.files import atomic_write, check_writable

    with pytest.raises(InrdiagError, match="path"):
        check_writable(bad)
    with pytest.raises(InrdiagError, match="path"):
        atomic_write(bad, lambda tmp: None)


# ---------------------------------------------------------------- policy files
@pytest.mark.parametrize(
    "body, text",
    [('grid = "abc"', "grid"), ('tol = "x"', "tol"), ("tol = 0", "tol"), ("grid = 8.9", "grid"),
     ("max_dead_fraction = true", "max_dead_fraction"), ("min_weight_stable_rank = -1", "min_weight_stable_rank"),
     ("allow_nonfinite = 1", "allow_nonfinite"), ("min-weight-stable-rank = 1\nmin_weight_stable_rank = 2", "spelt twice"),
     ("nan_key = 1", "unknown keys"), ("min_inlet_effective_rank_fraction = nan", "min_inlet_effective_rank_fraction")],
)  # fmt: skip
def test_bad_policy_values_named(cli, model_file, tmp_path, body, text):
    p = tmp_path / "pyproject.toml"
    p.write_text("[tool.inrdiag.check]\n" + body + "\n")
    r = cli("check", model_file, "--policy", p)
    assert r.code == 2 and text in r.err and str(p) in r.err, r.err
    _one_line(r)


@pytest.mark.parametrize("text", ['[tool]\ninrdiag = "x"\n', '[tool.inrdiag]\ncheck = "abc"\n', "[tool.inrdiag]\nx = 1\n",
                                  "[project]\nname = 'x'\n", "= broken"])  # fmt: skip
def test_bad_policy_tables_named(cli, model_file, tmp_path, text):
    p = tmp_path / "pyproject.toml"
    p.write_text(text)
    r = cli("check", model_file, "--policy", p)
    assert r.code == 2 and str(p) in r.err, r.err
    _one_line(r)


@pytest.mark.parametrize("text", ["[1, 2]", '{"check": 3}', '{"grid": "8"}', "{"])
def test_bad_json_policies(cli, model_file, tmp_path, text):
    p = tmp_path / "policy.json"
    p.write_text(text)
    r = cli("check", model_file, "--policy", p)
    assert r.code == 2 and str(p) in r.err, r.err
    _one_line(r)


def test_check_tol_zero_refused(cli, model_file):
    r = cli("check", model_file, "--tol", "0")
    assert r.code == 2 and "tol" in r.err and "> 0" in r.err, r.err


@pytest.mark.parametrize("kw", [{"tol": -1}, {"tol": 0}, {"grid": 2.5}, {"grid": True}, {"max_dead_fraction": True},
                                {"min_weight_stable_rank": "3"}, {"allow_nonfinite": None}])  # fmt: skip
def test_check_policy_constructor_validates(kw):
    from inrdiag.errors import InrdiagError

    with pytest.raises(InrdiagError, match=next(iter(kw))):
        inrdiag.CheckPolicy(**kw)


def test_check_reads_the_nearest_pyproject_by_default(cli, model_file, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.inrdiag.check]\nmin-weight-stable-rank = 1000\ngrid = 8\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    r = cli("check", model_file, "--json")
    assert r.code == 1, r.err  # the threshold from the file applied
    d = r.json()
    assert d["policy"]["source"] == str(tmp_path / "pyproject.toml") and d["policy"]["grid"] == 8
    assert d["notes"][0] == f"policy file: {tmp_path / 'pyproject.toml'}"
    r = cli("check", model_file)
    assert r.code == 1 and str(tmp_path / "pyproject.toml") in r.out
    (sub / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # the nearest one has no table: no policy
    r = cli("check", model_file, "--json")
    assert r.code == 0 and r.json()["policy"]["source"] is None, r.err
