"""The shipped sample data (inrdiag/data) is what inrdiag/data/DATA_SOURCES.md says it is, offline.

- every shipped file matches the sha256 list in DATA_SOURCES.md, and the list names every file;
- the byte sizes and the bunny's statistics stated there hold;
- the images and the cohort regenerate pixel for pixel from scikit-image's bundled photographs
  (a dev extra), whose own sha256 are the ones listed;
- the checkpoints regenerate from examples/make_checkpoints.py (same tensors, architecture, provenance);
- the bunny's occupancy grid regenerates from Debian's glmark2-data mesh: the only check that needs a
  file no pip install provides, so it alone is skipped where that package is absent (CI).
Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import inrdiag
from inrdiag.sample_data import sample_data_dir, sample_files

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "inrdiag" / "data"
SOURCES = (DATA / "DATA_SOURCES.md").read_text(encoding="utf-8")
BUNNY = Path("/usr/share/glmark2/models/bunny.obj")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _section(title: str) -> str:
    """The text of DATA_SOURCES.md's section ``## title`` (up to the next ``## ``)."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", SOURCES, re.M | re.S)
    assert m, f"DATA_SOURCES.md has no section '## {title}'"
    return m.group(1)


def _checksums(title: str) -> dict[str, str]:
    """path -> sha256 from the ``sha256sum`` lines of a section's code block."""
    block = re.search(r"```\n(.*?)```", _section(title), re.S)
    assert block, f"section '{title}' has no code block"
    pairs = [line.split() for line in block.group(1).strip().splitlines()]
    assert all(len(p) == 2 and re.fullmatch(r"[0-9a-f]{64}", p[0]) for p in pairs), pairs
    return {path: digest for digest, path in pairs}


def _script(name: str) -> ModuleType:
    """An ``examples/`` script imported as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(f"_examples_{name}", ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_shipped_file_matches_its_listed_sha256():
    listed = _checksums("Checksums of the shipped files")
    shipped = {p.as_posix() for p in sample_files()} - {"DATA_SOURCES.md"}
    assert sample_data_dir().resolve() == DATA.resolve()
    assert set(listed) == shipped, {"unlisted": sorted(shipped - set(listed)), "missing": sorted(set(listed) - shipped)}
    wrong = [path for path, digest in listed.items() if _sha256(DATA / path) != digest]
    assert not wrong, f"sha256 differs from DATA_SOURCES.md: {wrong}"


def test_stated_byte_sizes_hold():
    """Every line naming a shipped file (in backticks) with a size in bytes ("9,492 B") states its true size."""
    by_name = {p.name: DATA / p for p in sample_files()}
    stated: dict[str, int] = {}
    for line in SOURCES.splitlines():
        names = [n for n in re.findall(r"`([^`]+)`", line) if n in by_name]
        size = re.search(r"\b(\d[\d,]*) B\b", line)
        if names and size:
            stated[names[0]] = int(size.group(1).replace(",", ""))
    assert {"camera.png", "astronaut.png", "coffee.png", "chirp.wav", "torus.obj", "moving_disc.npy"} <= set(stated)
    for name, size in stated.items():
        assert by_name[name].stat().st_size == size, name
    assert (DATA / "occupancy" / "bunny64.npz").stat().st_size == int(
        re.search(r"\((\d[\d,]*) B compressed\)", SOURCES).group(1).replace(",", "")
    )


def test_bunny_grid_is_as_documented():
    with np.load(DATA / "occupancy" / "bunny64.npz") as z:
        assert list(z.keys()) == ["occupancy"]
        vol = z["occupancy"]
    assert vol.shape == (64, 64, 64) and vol.dtype == np.bool_
    occupied, total = (int(s.replace(",", "")) for s in re.search(r"([\d,]+) of ([\d,]+) voxels", SOURCES).groups())
    assert (int(vol.sum()), vol.size) == (occupied, total)
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, 1)  # 6-connectivity
    assert ndimage.label(vol, structure=structure)[1] == 1  # "one 6-connected component"


def test_shipped_data_loads_as_targets():
    from inrdiag.fitting.targets import load_target

    for path in sorted((DATA / "images").glob("*.png")):
        t = load_target(path)
        assert t.kind == "image" and t.shape == (128, 128)
    for path in sorted((DATA / "cohort").glob("*.png")):
        assert load_target(path).shape == (64, 64)
    occ = load_target(DATA / "occupancy" / "bunny64.npz")
    assert occ.kind == "occupancy" and occ.shape == (64, 64, 64)
    assert 0.05 < float(occ.values.mean()) < 0.3


def test_photographs_regenerate_from_scikit_image(tmp_path):
    """images/ and cohort/ from scikit-image's bundled photographs, whose sha256 DATA_SOURCES.md lists."""
    skimage_data = pytest.importorskip("skimage.data")  # the [dev] extra installs it
    folder = Path(skimage_data.__file__).parent
    listed = _checksums("Checksums of the source files (scikit-image 0.26.0 wheel)")
    assert len(listed) == 12
    for name, digest in listed.items():
        assert _sha256(folder / name) == digest, f"skimage/data/{name} differs from the one the data was made from"
    make = _script("make_sample_data")
    made = make.make_images(tmp_path / "images") + make.make_cohort(tmp_path / "cohort")
    shipped = sorted((DATA / "images").glob("*.png")) + sorted((DATA / "cohort").glob("*.png"))
    assert sorted(p.relative_to(tmp_path) for p in made) == sorted(p.relative_to(DATA) for p in shipped)
    assert len(shipped) == 15
    for path in shipped:
        np.testing.assert_array_equal(iio.imread(tmp_path / path.relative_to(DATA)), iio.imread(path))


def test_checkpoints_regenerate():
    make = _script("make_checkpoints")
    for name, build, init in (("relu_4x256", make.relu_4x256, "default"), ("siren_3x64", make.siren_3x64, "siren")):
        shipped = inrdiag.load(DATA / "checkpoints" / f"{name}.safetensors")
        fresh = build()
        assert shipped.spec == fresh.spec, name
        assert shipped.provenance is not None
        assert {k: shipped.provenance.get(k) for k in ("init", "made_by")} == {
            "init": init,
            "made_by": "examples/make_checkpoints.py",
        }
        a, b = shipped.model.state_dict(), fresh.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype == torch.float32
            assert torch.equal(a[key], b[key]), f"{name}: {key}"


def test_bunny_grid_regenerates_from_the_glmark2_mesh():
    if not BUNNY.exists():
        pytest.skip("Debian's glmark2-data (bunny.obj) is not installed: the mesh is not a pip package")
    digest = re.search(r"sha256 of the OBJ:\s*`([0-9a-f]{64})`", SOURCES)
    assert digest and _sha256(BUNNY) == digest.group(1)
    make = _script("make_sample_data")
    vol = make.voxelise(make.normalise(make.load_obj_triangles(BUNNY)), 64)
    with np.load(DATA / "occupancy" / "bunny64.npz") as z:
        np.testing.assert_array_equal(vol, z["occupancy"])
