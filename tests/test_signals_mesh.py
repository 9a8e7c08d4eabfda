"""Meshes and point clouds -> occupancy / SDF targets, against exact inside tests of analytic shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("scipy")

from inrdiag.fitting.targets import load_target  # noqa: E402
from inrdiag.signals.errors import MeshError  # noqa: E402
from inrdiag.signals.mesh import EXTENT, heldout_axis  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def grid_points(n):
    g = np.linspace(-1, 1, n)
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


@pytest.fixture(scope="module")
def box_obj(tmp_path_factory):
    """An axis-aligned box 1.0 x 0.6 x 0.4 off the origin: after normalisation it spans x in [-0.9, 0.9]."""
    path = tmp_path_factory.mktemp("mesh") / "box.obj"
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    box.apply_translation((3.0, -1.0, 2.0))
    box.export(path)
    return path


def test_box_occupancy_equals_the_exact_inside_test(box_obj):
    t = load_target(box_obj, size=21)
    assert t.kind == "occupancy" and t.shape == (21, 21, 21)
    # normalisation: centre (3, -1, 2) -> 0, scale 0.9 / 0.5, so half-sides 0.9, 0.54, 0.36
    assert t.meta["centre"] == pytest.approx([3.0, -1.0, 2.0])
    assert t.meta["scale"] == pytest.approx(EXTENT / 0.5)
    assert t.meta["watertight"] is True
    q = grid_points(21)
    half = np.array([0.9, 0.54, 0.36])
    strict = (np.abs(q) < half - 1e-6).all(1)
    on_face = (np.abs(np.abs(q) - half) < 1e-6).any(1) & (np.abs(q) <= half + 1e-6).all(1)
    got = t.values[:, 0].numpy() > 0.5
    assert np.array_equal(got[~on_face], strict[~on_face])  # points exactly on a face may go either way
    assert on_face.sum() > 0  # x = +-0.9 lies on the 21-point grid


def test_sphere_occupancy_and_sdf_against_the_analytic_sphere(tmp_path):
    path = tmp_path / "sphere.stl"
    trimesh.creation.icosphere(subdivisions=4, radius=2.0).export(path)
    occ = load_target(path, size=17)
    q = grid_points(17)
    r = np.linalg.norm(q, axis=1)
    radius = EXTENT  # the icosphere's bounding box half-side is its radius (vertices on the axes)
    facet = radius * (1 - np.cos(np.deg2rad(4.0)))  # icosphere(4): chords within ~4 degrees: inscribed gap
    clear = np.abs(r - radius) > facet
    got = occ.values[:, 0].numpy() > 0.5
    assert np.array_equal(got[clear], (r < radius)[clear])

    sdf = load_target(path, size=17, kind="sdf")
    assert sdf.kind == "sdf" and sdf.meta["sdf_truncation"] == pytest.approx(0.1)
    v = sdf.values[:, 0].numpy()
    assert np.array_equal((v < 0)[clear], (r < radius)[clear])  # sign: negative inside
    band = np.abs(r - radius) < 0.08
    assert band.sum() > 50
    np.testing.assert_allclose(v[band], (r - radius)[band], atol=facet + 1e-6)  # magnitude: |q| - R
    assert np.all(np.abs(v) <= 0.1 + 1e-6)
    assert np.allclose(np.abs(v[np.abs(r - radius) > 0.15]), 0.1)  # truncated beyond the band


def test_dense_heldout_grid_is_disjoint_and_denser():
    train = np.linspace(-1, 1, 9)
    held = heldout_axis(9)
    assert len(held) == 16
    assert np.min(np.abs(held[:, None] - train[None, :])) > 0.05


def test_dense_heldout_iou_reported_by_fit(box_obj):
    from inrdiag.fitting.loop import FitConfig, fit

    t = load_target(box_obj, size=9)
    res = fit(t, FitConfig(steps=5, width=16, depth=1, seed=0))
    d = res.details
    assert d["dense_heldout_grid"] == [16, 16, 16]
    assert 0.0 <= d["dense_heldout_iou"] <= 1.0
    # the truth of the dense grid is the exact box test at the cell centres
    assert d["dense_heldout_inside_fraction"] == pytest.approx(
        float(np.mean((np.abs(np.stack(np.meshgrid(*[heldout_axis(9)] * 3, indexing="ij"), -1))
                       < np.array([0.9, 0.54, 0.36])).all(-1))))  # fmt: skip


def test_point_cloud_with_normals(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    path = tmp_path / "cloud.xyz"
    np.savetxt(path, np.hstack([sphere.vertices, sphere.vertex_normals]))
    t = load_target(path, size=11)
    q = grid_points(11)
    r = np.linalg.norm(q, axis=1)
    clear = np.abs(r - EXTENT) > 0.1
    assert np.array_equal((t.values[:, 0].numpy() > 0.5)[clear], (r < EXTENT)[clear])
    assert any("point cloud" in n for n in t.meta["notes"])
    bare = tmp_path / "bare.xyz"
    np.savetxt(bare, sphere.vertices)
    with pytest.raises(MeshError, match="x y z nx ny nz"):
        load_target(bare)


def test_shipped_torus_is_watertight_and_loads():
    t = load_target(ROOT / "examples" / "signals" / "torus.obj", size=12)
    assert t.meta["watertight"] and t.meta["triangles"] == 2304
    assert 0.05 < t.meta["inside_fraction"] < 0.2


def _write_obj(path, verts, faces):
    path.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in verts) + "".join(f"f {a} {b} {c}\n" for a, b, c in faces))


TET_V = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
TET_F = [(1, 3, 2), (1, 2, 4), (1, 4, 3), (2, 3, 4)]


def test_bad_meshes_are_refused_in_one_line(tmp_path, cli):
    _write_obj(tmp_path / "open.obj", TET_V, TET_F[:3])
    _write_obj(tmp_path / "nan.obj", [(0, 0, 0), ("nan", 0, 0), (0, 1, 0), (0, 0, 1)], TET_F)
    (tmp_path / "empty.obj").write_text("# nothing\nv 0 0 0\n")
    _write_obj(tmp_path / "tet.obj", TET_V, TET_F)
    with pytest.raises(MeshError, match="not watertight"):
        load_target(tmp_path / "open.obj")
    with pytest.raises(MeshError, match="NaN"):
        load_target(tmp_path / "nan.obj")
    with pytest.raises(MeshError, match="empty|no geometry|not a triangle mesh"):
        load_target(tmp_path / "empty.obj")
    assert load_target(tmp_path / "tet.obj", size=5).meta["watertight"]
    for name, text in (("open.obj", "not watertight"), ("nan.obj", "NaN")):
        r = cli("fit", tmp_path / name, "--steps", "1")
        assert r.code == 2 and text in r.err and r.err.count("\n") == 1
    r = cli("fit", tmp_path / "tet.obj", "--target-kind", "audio")
    assert r.code == 2 and "occupancy or sdf" in r.err


class Ball(__import__("torch").nn.Module):
    """An analytic 'fit': logit 0.6 - |x| (occupancy), or |x| - 0.6 (SDF)."""

    def __init__(self, sign=1.0):
        import torch

        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.sign = sign

    def forward(self, x):
        return self.sign * (0.6 - x.norm(dim=1, keepdim=True)) + 0 * self.w


@pytest.mark.parametrize("kind", ["occupancy", "sdf"])
def test_marching_cubes_of_an_analytic_field(tmp_path, box_obj, kind):
    pytest.importorskip("skimage")
    from inrdiag.signals.mesh import extract_surface

    t = load_target(box_obj, size=25, kind=kind)
    out = tmp_path / "ball.obj"
    info = extract_surface(Ball(1.0 if kind == "occupancy" else -1.0), t, str(out))
    rec = trimesh.load(out)
    assert info["frame"] == "input" and len(rec.faces) == info["triangles"] > 100
    # the level set |x'| = 0.6 in the normalised frame is a ball of radius 0.6 / scale around the box centre
    r = np.linalg.norm(rec.vertices - np.array([3.0, -1.0, 2.0]), axis=1)
    np.testing.assert_allclose(r, 0.6 / t.meta["scale"], rtol=0.03)
    assert rec.is_watertight and rec.volume > 0  # closed, and outward-facing in both sign conventions


def test_fit_mesh_cli_writes_recon_and_provenance(tmp_path, cli):
    pytest.importorskip("skimage")
    sphere = tmp_path / "sphere.ply"
    trimesh.creation.icosphere(subdivisions=2, radius=1.0).export(sphere)
    out = tmp_path / "recon.obj"
    r = cli("fit", sphere, "--init", "default", "--grid", "9", "--steps", "60", "--depth", "1", "--width", "32",
            "--lr", "0.01", "--recon", out, "-o", tmp_path / "m.safetensors", "--json")  # fmt: skip
    assert r.code == 0, r.err
    data = r.json()
    assert data["target"]["kind"] == "occupancy" and 0 < data["details"]["dense_heldout_iou"] <= 1
    assert len(trimesh.load(out).faces) > 0
    from inrdiag.checkpoints.load import load

    prov = load(tmp_path / "m.safetensors").provenance
    assert prov["target_kind"] == "occupancy" and prov["target_meta"]["watertight"] is True
    r = cli("fit", sphere, "--grid", "5", "--steps", "1", "--recon", tmp_path / "x.wav")
    assert r.code == 2 and ".obj" in r.err
