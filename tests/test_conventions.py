"""CLI conventions: --version, versioned JSON, help at 80/100 columns, plot formats, `inrdiag examples`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_model

import inrdiag

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("info", "rank", "check", "ntk", "fit", "compare", "reinit", "cohort-train", "freeze-sweep", "sae",
            "examples")  # fmt: skip


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"inrdiag {inrdiag.__version__}"
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert version == inrdiag.__version__


def test_json_is_versioned(cli, tmp_path):
    m = tmp_path / "m.safetensors"
    inrdiag.save(tiny_model(), m)
    for args in (("info", m), ("rank", m, "--grid", "8"), ("examples",)):
        d = cli(*args, "--json").json()
        assert list(d)[:2] == ["schema_version", "inrdiag_version"], args
        assert d["schema_version"] == 1 and d["inrdiag_version"] == inrdiag.__version__


@pytest.mark.parametrize("columns", ["80", "100"])
def test_help_fits_and_is_complete(columns):
    code = ("import sys; from inrdiag.cli import main\nfor c in sys.argv[1:]:\n    print('=== ' + c)\n"
            "    main([c, '--help'])\n")  # fmt: skip
    env = {"COLUMNS": columns, "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    out = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True, text=True, env=env,
                         cwd=ROOT).stdout  # fmt: skip
    pages = dict(re.findall(r"=== (\S+)\n(.*?)(?==== |\Z)", out, flags=re.S))
    assert set(pages) == set(COMMANDS)
    from inrdiag.cli import _command

    group = _command()
    for name, page in pages.items():
        assert max(len(line) for line in page.splitlines()) <= int(columns), name
        assert "Example:" in page and "<bool>" not in page and "<str>" not in page and "…" not in page, name
        for p in group.commands[name].params:  # every option name printed whole
            for opt in (p.opts + p.secondary_opts) if p.param_type_name == "option" else []:
                assert opt in page, (name, opt)
    assert "[tool.inrdiag.check]" in pages["check"]


def test_help_examples_parse():
    """Each command's example is a valid command line for it (parsed, not run)."""
    import shlex

    from inrdiag.cli import _command
    from inrdiag.cli.app import HELP

    group = _command()
    for name, (_, lines) in HELP.items():
        args = shlex.split(" ".join(lines))
        assert args[:2] == ["inrdiag", name]
        group.commands[name].make_context(name, args[2:], resilient_parsing=False)


def test_plot_extension_is_checked_first(cli, tmp_path):
    m = tmp_path / "m.safetensors"
    inrdiag.save(tiny_model(), m)
    r = cli("rank", m, "--grid", "8", "--plot", tmp_path / "r.jpg")
    assert r.code == 2 and ".png, .pdf or .svg" in r.err and len(r.err.strip().splitlines()) == 1
    for ext, magic in (("svg", b"<?xml"), ("pdf", b"%PDF"), ("png", b"\x89PNG")):
        r = cli("rank", m, "--grid", "8", "--plot", tmp_path / f"r.{ext}")
        assert r.code == 0 and f"wrote plot: {tmp_path / f'r.{ext}'}" in r.out
        assert (tmp_path / f"r.{ext}").read_bytes().startswith(magic)


def test_examples_command(cli, tmp_path):
    d = tmp_path / "ex"
    r = cli("examples", d, "--json")
    assert r.code == 0 and all(w["status"] == "wrote" for w in r.json()["written"])
    assert (d / "images" / "camera.png").read_bytes() == (ROOT / "examples" / "images" / "camera.png").read_bytes()
    again = cli("examples", d, "--json").json()["written"]
    assert {w["status"] for w in again} == {"same"}
    (d / "images" / "camera.png").write_bytes(b"mine")
    r = cli("examples", d)
    assert r.code == 2 and "differs" in r.err and (d / "images" / "camera.png").read_bytes() == b"mine"
    assert cli("examples", d, "--force").code == 0
    assert (d / "images" / "camera.png").read_bytes() != b"mine"
    listing = cli("examples")
    assert listing.code == 0 and "checkpoints/relu_4x256.safetensors" in listing.out
    json.dumps(inrdiag.sample_data_dir().as_posix())
