"""examples/make_sample_data.py regenerates the shipped sample data (pixel for pixel).

Needs the maintainer-only sources (scikit-image's bundled photographs, Debian's glmark2-data
bunny); skipped where they are not installed, since they are not dependencies of inrdiag.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNNY = Path("/usr/share/glmark2/models/bunny.obj")


def test_sample_data_regenerates(tmp_path):
    pytest.importorskip("skimage")
    if not BUNNY.exists():
        pytest.skip("glmark2-data (bunny.obj) not installed")
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_sample_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    shipped = sorted((ROOT / "examples").glob("images/*.png")) + sorted((ROOT / "examples").glob("cohort/*.png"))
    assert len(shipped) >= 15
    for path in shipped:
        made = tmp_path / path.relative_to(ROOT / "examples")
        np.testing.assert_array_equal(iio.imread(made), iio.imread(path))
    a = np.load(tmp_path / "occupancy" / "bunny64.npz")["occupancy"]
    b = np.load(ROOT / "examples" / "occupancy" / "bunny64.npz")["occupancy"]
    np.testing.assert_array_equal(a, b)


def test_shipped_data_loads_as_targets():
    from inrdiag.fitting.targets import load_target

    for path in sorted((ROOT / "examples").glob("images/*.png")):
        t = load_target(path)
        assert t.kind == "image" and t.shape == (128, 128)
    occ = load_target(ROOT / "examples" / "occupancy" / "bunny64.npz")
    assert occ.kind == "occupancy" and occ.shape == (64, 64, 64)
    assert 0.05 < float(occ.values.mean()) < 0.3
