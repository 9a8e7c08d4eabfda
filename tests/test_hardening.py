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
        "import inrdiag.fitting\n"
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

    monkeypatch.setattr("inrdiag.cli.core.load_model", boom)
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

    monkeypatch.setattr("inrdiag.cli.core.load_model", boom)
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
