"""A regular (non-editable) install of a built wheel runs the README's commands from an empty folder.

The wheel is built offline from a copy of the package (``pip wheel --no-build-isolation``), installed with
``pip install --target`` (torch and the other dependencies come from this environment), and every ``inrdiag``
command in the README's bash blocks runs from an empty temporary folder with only that install on
PYTHONPATH, so it cannot read the repository's files. Training steps are cut to a few to keep this bounded
(``.ci/run`` runs the README's first command verbatim).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(md: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", md.read_text(), flags=re.S)


def inrdiag_commands(md: Path) -> list[str]:
    """The ``inrdiag ...`` commands of a Markdown file's bash blocks, in order (``&&`` chains split)."""
    out = []
    for block in bash_blocks(md):
        for line in block.splitlines():
            out += [part.strip() for part in line.split("&&") if part.strip().startswith("inrdiag ")]
    return out


def test_ci_runs_the_readme_first_command_verbatim():
    first = bash_blocks(ROOT / "README.md")[0].strip().splitlines()[0]
    assert first.startswith("pip install torch")
    assert first in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site dir, the installed ``inrdiag`` script) of a wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "inrdiag", src / "inrdiag", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel")],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    if r.returncode != 0:
        pytest.fail(f"wheel build failed: {r.stderr[-2000:]}")
    (wheel,) = (tmp / "wheel").glob("inrdiag-*.whl")
    site = tmp / "site"
    r = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return site, site / "bin" / "inrdiag"


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS")}
    env.update(PYTHONPATH=str(site), NO_COLOR="1", COLUMNS="100")
    return env


def test_wheel_has_the_sample_data(installed):
    site, _ = installed
    data = site / "inrdiag" / "data"
    for rel in ("DATA_SOURCES.md", "checkpoints/relu_4x256.safetensors", "images/camera.png",
                "cohort/00_camera.png", "occupancy/bunny64.npz"):  # fmt: skip
        assert (data / rel).is_file(), rel
    assert (data / "images" / "camera.png").read_bytes() == (ROOT / "examples" / "images" / "camera.png").read_bytes()


def test_readme_commands_from_an_empty_folder(installed, tmp_path):
    site, script = installed
    here = tmp_path / "empty"
    here.mkdir()
    env = _env(site)
    where = subprocess.run([sys.executable, "-c", "import inrdiag; print(inrdiag.__file__)"], cwd=here, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site), where
    commands = inrdiag_commands(ROOT / "README.md")
    assert commands[0] == "inrdiag examples examples" and any(c.startswith("inrdiag rank") for c in commands)
    for cmd in commands:
        args = shlex.split(re.sub(r"--steps \d+", "--steps 3", cmd))[1:]
        r = subprocess.run([str(script), *args], cwd=here, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
    r = subprocess.run([str(script), "--version"], cwd=here, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "inrdiag 0.1.0"
    assert (here / "examples" / "images" / "camera.png").is_file()
