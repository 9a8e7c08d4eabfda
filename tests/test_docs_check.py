"""docs/check.md's GitHub Actions recipe works as written: its shell lines run in a fresh virtual environment
(torch and the other dependencies seen from this one; the CPU-torch download line is the only one skipped)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "check.md"


def recipe() -> tuple[list[str], list[str], str]:
    """(wheel-building lines, workflow ``run:`` lines, the pyproject.toml example) from the doc."""
    text = DOC.read_text()
    bash = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    build = [line for block in bash for line in block.strip().splitlines() if line.startswith("pip wheel")]
    yaml = re.search(r"```yaml\n(.*?)```", text, flags=re.S).group(1)
    runs = []
    lines = yaml.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)(- )?run: (.*)", line)
        if not m:
            continue
        if m.group(3).strip() == "|":
            indent = None
            for nxt in lines[i + 1 :]:
                if not nxt.strip():
                    break
                lead = len(nxt) - len(nxt.lstrip())
                indent = lead if indent is None else indent
                if lead < indent:
                    break
                runs.append(nxt.strip())
        else:
            runs.append(m.group(3).strip())
    toml = re.search(r"```toml\n(.*?)```", text, flags=re.S).group(1)
    return build, runs, toml


def test_recipe_runs_as_written(tmp_path):
    build, runs, toml = recipe()
    assert build and any(r.startswith("pip install tools/") for r in runs)
    assert any(r.startswith("inrdiag check") for r in runs)
    src = tmp_path / "inrdiag-src"  # a clone of inrdiag, as the doc says
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "inrdiag", src / "inrdiag", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    repo = tmp_path / "repo"  # the repository whose checkpoints are gated
    (repo / "checkpoints").mkdir(parents=True)
    shutil.copy(
        ROOT / "examples" / "checkpoints" / "relu_4x256.safetensors", repo / "checkpoints" / "model.safetensors"
    )
    (repo / "pyproject.toml").write_text(toml.replace("# pyproject.toml\n", ""))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    vpy = env_dir / "bin" / "python"
    # pip itself from this interpreter, targeting the venv (no network needed to seed pip)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{env_dir / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(env_dir), PIP_DISABLE_PIP_VERSION_CHECK="1")
    # The venv sees this machine's packages (no torch download); where inrdiag itself is installed here
    # too (CI's README step installs it), pip would call the recipe's wheel "already satisfied". A runner
    # has no inrdiag: install the recipe's packages into the venv regardless, their dependencies from here.
    env.update(PIP_IGNORE_INSTALLED="1", PIP_NO_DEPS="1")
    shim = env_dir / "bin" / "pip"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m pip --python {vpy} "$@"\n')
    shim.chmod(0o755)
    for line in build:
        cmd = line.replace("path/to/inrdiag", str(src))
        r = subprocess.run(cmd, shell=True, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}: {r.stderr[-2000:]}"
    for line in runs:
        if line.startswith("pip install torch"):
            continue  # a download from the PyTorch index: torch is already visible in this venv
        r = subprocess.run(line, shell=True, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode in (0, 1), f"{line}: exit {r.returncode}: {r.stderr[-2000:]}"
    where = subprocess.run([str(vpy), "-c", "import inrdiag; print(inrdiag.__file__)"], cwd=repo, env=env,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(env_dir) in where
    report = json.loads((repo / "rank-check.json").read_text())
    assert report["schema_version"] >= 1 and report["policy"]["grid"] == 128 and "passed" in report
