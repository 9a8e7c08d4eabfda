"""Meshes and oriented point clouds as occupancy or signed-distance targets on a grid in [-1, 1]^3.

Normalisation (recorded in the target's meta and the checkpoint's provenance): ``x' = (x - c) * s``
with ``c`` the centre of the axis-aligned bounding box and ``s = EXTENT / h``, ``h`` the longest
half-side, so the shape is centred and its longest side spans [-0.9, 0.9] (aspect ratio kept; the
10% border keeps the surface off the cube's faces, so marching cubes closes it).

Inside/outside:
- a mesh (``.obj/.ply/.stl/.off``, read with trimesh, vertices merged) must be watertight, else it is
  refused (inside is undefined for an open surface). A grid point is inside when a ray from it along
  +x crosses the surface an odd number of times (trimesh's ray engine, one ray per grid column, all
  hits). Rays are shifted by 1e-7 off the grid lines so they do not run along edges; should any ray
  still see an odd number of hits (a grazing hit), the test is repeated along +y and +z and the
  majority of the three is taken (noted).
- an oriented point cloud (``.xyz`` with 6 columns x y z nx ny nz, or a ``.ply`` of vertices with
  normals) has no surface to cross: a point q is inside when ``(q - p) . n_p < 0`` for its nearest
  cloud point p (scipy's cKDTree), the usual sign of an oriented-point SDF.

Occupancy: 1 inside, on the ``linspace(-1, 1, n)`` grid (default n = 64). The dense held-out grid
(inlet paper: IoU on dense points, not the training voxels) has M = min(2 (n - 1), 256) points per
axis at the cell centres ``-1 + (2i + 1) / M``: disjoint from the training grid, 8x the points.

SDF (``kind="sdf"``): negative inside, truncated at tau = 0.1 (DeepSDF's delta), exact within the
band: the distance of every grid point whose nearest vertex is closer than tau + the longest edge
(so every point with true distance <= tau) is the exact point-to-triangle distance (trimesh), the
others are set to +-tau. Point clouds: distance to the nearest cloud point (an approximation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..errors import TargetError
from ..files import atomic_write
from ..fitting.targets import Target, _check_points, file_sha256
from ..grid import check_memory
from ..models.predict import predict
from .errors import MeshError, require
from .kinds import SDF_TRUNCATION

#: Float64 coordinates, distances and normals (numpy).
Floats = npt.NDArray[np.float64]
#: Inside masks (numpy bools).
Mask = npt.NDArray[np.bool_]

MESH_SUFFIXES = {".obj", ".ply", ".stl", ".off"}
POINT_SUFFIXES = {".xyz"}
DEFAULT_GRID = 64
#: Longest half-side of the normalised shape.
EXTENT = 0.9
HELDOUT_MAX = 256
RAY_JITTER = (1.2e-7, 2.3e-7)
CHUNK = 1 << 18


class Geometry:
    """A normalised watertight mesh (``mesh``) or oriented point cloud (``points``, ``normals``)."""

    def __init__(self, mesh: Any = None, points: Floats | None = None, normals: Floats | None = None) -> None:
        #: A ``trimesh.Trimesh`` (trimesh is optional and untyped).
        self.mesh = mesh
        self.points = points
        self.normals = normals
        self._tree: Any = None  # scipy.spatial.cKDTree, built on first use
        self.notes: list[str] = []

    @property
    def is_mesh(self) -> bool:
        return self.mesh is not None

    def tree(self) -> Any:
        """The k-d tree (scipy ``cKDTree``) of the cloud points or mesh vertices, built once."""
        if self._tree is None:
            spatial = require("scipy.spatial", "mesh", "point-cloud inside tests")
            self._tree = spatial.cKDTree(self.points if not self.is_mesh else self.mesh.vertices)
        return self._tree

    def inside_grid(self, axes: Sequence[Floats]) -> Mask:
        """Bool array (len(axes[0]), len(axes[1]), len(axes[2])): grid point inside the shape."""

        if not self.is_mesh:
            mesh_q = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            return self.points_sign(mesh_q)[0].reshape(tuple(len(a) for a in axes))
        first, odd = _parity(self.mesh, axes, 0)
        if not odd:
            return first
        votes = first.astype(np.int8) + _parity(self.mesh, axes, 1)[0] + _parity(self.mesh, axes, 2)[0]
        note = f"{odd} ray(s) along x hit the surface an odd number of times; inside = majority of x, y, z rays"
        if note not in self.notes:
            self.notes.append(note)
        return votes >= 2

    def points_sign(self, q: Floats) -> tuple[Mask, Floats]:
        """(inside, distance to the nearest cloud point) for query points q (Q x 3), in chunks."""

        tree = self.tree()
        if self.points is None or self.normals is None:
            raise MeshError("inside tests by normals need an oriented point cloud")  # pragma: no cover
        inside = np.empty(len(q), dtype=bool)
        dist = np.empty(len(q))
        for s in range(0, len(q), CHUNK):
            d, i = tree.query(q[s : s + CHUNK])
            inside[s : s + CHUNK] = np.einsum("ij,ij->i", q[s : s + CHUNK] - self.points[i], self.normals[i]) < 0
            dist[s : s + CHUNK] = d
        return inside, dist

    def distance(self, q: Floats) -> Floats:
        """Unsigned distance of q (Q x 3) to the surface: exact for a mesh, to the nearest point for a cloud."""
        if not self.is_mesh:
            return self.points_sign(q)[1]

        trimesh = require("trimesh", "mesh", "mesh distances")
        out = np.empty(len(q))
        for s in range(0, len(q), 1 << 15):
            out[s : s + (1 << 15)] = trimesh.proximity.closest_point(self.mesh, q[s : s + (1 << 15)])[1]
        return out


def _parity(mesh: Any, axes: Sequence[Floats], a: int) -> tuple[Mask, int]:
    """Inside test by ray parity along axis ``a``: (bool grid in x, y, z order, number of odd rays)."""

    b, c = [k for k in range(3) if k != a]
    B, C = np.meshgrid(axes[b], axes[c], indexing="ij")
    nrays = B.size
    origins = np.zeros((nrays, 3))
    origins[:, a] = -4.0
    origins[:, b] = B.reshape(-1) + RAY_JITTER[0]
    origins[:, c] = C.reshape(-1) + RAY_JITTER[1]
    dirs = np.zeros((nrays, 3))
    dirs[:, a] = 1.0
    loc, ray, _ = mesh.ray.intersects_location(origins, dirs, multiple_hits=True)
    counts = np.bincount(ray, minlength=nrays)
    odd = int((counts % 2).sum())
    # per ray r, count hits with coordinate < x: one sorted array of keys r + (x + 4) / 8 in [r, r + 1)
    keys = np.sort(ray + (loc[:, a] + 4.0) / 8.0) if len(ray) else np.zeros(0)
    xs = np.asarray(axes[a], dtype=np.float64)
    r = np.arange(nrays)[:, None]
    before = np.searchsorted(keys, r + (xs[None, :] + 4.0) / 8.0) - np.searchsorted(keys, r)
    inside = (before % 2 == 1).reshape(len(axes[b]), len(axes[c]), len(xs))  # (b, c, a)
    order = [0, 0, 0]
    order[b], order[c], order[a] = 0, 1, 2
    return np.transpose(inside, order), odd


def read_geometry(p: Path) -> tuple[Geometry, dict[str, Any]]:
    """Read, check and normalise a mesh or oriented point cloud (see the module docstring)."""

    suffix = p.suffix.lower()
    if suffix in POINT_SUFFIXES:
        try:
            data = np.loadtxt(p, ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise MeshError(f"{p}: cannot read as x y z nx ny nz rows ({str(exc).splitlines()[0][:100]})") from None
        if data.size == 0:
            raise MeshError(f"{p}: the point cloud is empty")
        if data.shape[1] < 6:
            raise MeshError(f"{p}: {data.shape[1]} columns; an oriented point cloud needs x y z nx ny nz "
                            "(inside/outside is undefined without normals)")  # fmt: skip
        return _points(p, data[:, :3], data[:, 3:6], "xyz")
    trimesh = require("trimesh", "mesh", f"{p}: reading meshes")
    try:
        obj = trimesh.load(str(p), process=False)
    except Exception as exc:  # trimesh raises many types for broken files
        msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise MeshError(f"{p}: cannot read as a mesh ({msg})") from None
    if isinstance(obj, trimesh.Scene):
        geoms = list(obj.geometry.values())
        if not geoms:
            raise MeshError(f"{p}: the file holds no geometry")
        obj = trimesh.util.concatenate(geoms) if len(geoms) > 1 else geoms[0]
    if isinstance(obj, trimesh.PointCloud):
        normals = _ply_normals(obj)
        if normals is None:
            raise MeshError(f"{p}: a point cloud without normals; inside/outside is undefined "
                            "(give per-vertex nx ny nz, or a watertight mesh)")  # fmt: skip
        return _points(p, np.asarray(obj.vertices, dtype=np.float64), normals, "ply point cloud")
    if not isinstance(obj, trimesh.Trimesh):
        raise MeshError(f"{p}: holds a {type(obj).__name__}, not a triangle mesh")
    v = np.asarray(obj.vertices, dtype=np.float64)
    f = np.asarray(obj.faces)
    if len(v) == 0 or len(f) == 0:
        raise MeshError(f"{p}: the mesh is empty ({len(v)} vertices, {len(f)} triangles)")
    if not np.isfinite(v).all():
        bad = int((~np.isfinite(v).all(1)).sum())
        raise MeshError(f"{p}: {bad} vertex(es) hold NaN/Inf coordinates")
    mesh = trimesh.Trimesh(vertices=v, faces=f, process=True)  # merges duplicated vertices (OBJ seams)
    if len(mesh.faces) == 0:
        raise MeshError(f"{p}: no non-degenerate triangles")
    if not mesh.is_watertight:
        open_edges = len(trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1))
        raise MeshError(f"{p}: the mesh is not watertight ({open_edges} open edge(s)), so inside/outside is "
                        "undefined; close it first (e.g. trimesh.repair.fill_holes or MeshLab 'Close Holes')")  # fmt: skip
    centre, scale = _normalisation(mesh.vertices)
    mesh.apply_translation(-centre)
    mesh.apply_scale(scale)
    meta = {"source": "mesh", "vertices": int(len(mesh.vertices)), "triangles": int(len(mesh.faces)),
            "watertight": True, "winding_consistent": bool(mesh.is_winding_consistent),
            **_norm_meta(centre, scale)}  # fmt: skip
    return Geometry(mesh=mesh), meta


def _points(p: Path, pts: Floats, nrm: Floats, what: str) -> tuple[Geometry, dict[str, Any]]:

    if len(pts) == 0:
        raise MeshError(f"{p}: the point cloud is empty")
    if not (np.isfinite(pts).all() and np.isfinite(nrm).all()):
        raise MeshError(f"{p}: the point cloud holds NaN/Inf coordinates or normals")
    norms = np.linalg.norm(nrm, axis=1)
    if (norms == 0).any():
        raise MeshError(f"{p}: {int((norms == 0).sum())} point(s) have a zero normal")
    centre, scale = _normalisation(pts)
    geom = Geometry(points=(pts - centre) * scale, normals=nrm / norms[:, None])
    meta = {"source": what, "points": int(len(pts)), "watertight": None, **_norm_meta(centre, scale)}
    geom.notes.append("oriented point cloud: inside = behind the nearest point's normal; SDF magnitude is the "
                      "distance to the nearest point (approximate)")  # fmt: skip
    return geom, meta


def _ply_normals(cloud: Any) -> Floats | None:

    raw = (cloud.metadata or {}).get("_ply_raw", {}).get("vertex", {}).get("data")
    if raw is None or raw.dtype.names is None or not {"nx", "ny", "nz"} <= set(raw.dtype.names):
        return None
    return np.stack([np.asarray(raw[k], dtype=np.float64).reshape(-1) for k in ("nx", "ny", "nz")], 1)


def _normalisation(v: Floats) -> tuple[Floats, float]:
    lo, hi = v.min(0), v.max(0)
    half = float((hi - lo).max()) / 2
    if not half > 0:
        raise MeshError("the shape has zero extent (all points coincide)")
    return (lo + hi) / 2, EXTENT / half


def _norm_meta(centre: Floats, scale: float) -> dict[str, Any]:
    return {"centre": [float(c) for c in centre], "scale": float(scale),
            "normalisation": f"x' = (x - centre) * scale: bounding-box centre to 0, longest half-side to {EXTENT}"}  # fmt: skip


def heldout_axis(n: int) -> Floats:
    """The dense held-out grid's axis: M = min(2 (n - 1), HELDOUT_MAX) cell centres -1 + (2i + 1) / M."""

    m = min(2 * (n - 1), HELDOUT_MAX)
    return -1.0 + (2.0 * np.arange(m) + 1.0) / m


def load_mesh(p: Path, size: int | None = None, kind: str = "occupancy") -> Target:
    """A mesh or point cloud as an ``occupancy`` or ``sdf`` Target on a ``size``^3 grid (default 64)."""
    n = DEFAULT_GRID if size is None else int(size)
    if n < 2:
        raise MeshError(f"--size/--grid must be at least 2, got {n}")
    _check_points(n**3, p)
    m = len(heldout_axis(n))
    check_memory(8.0 * (n**3 + m**3) * 2, f"a {n}^3 grid and its {m}^3 held-out grid", "--grid")
    geom, meta = read_geometry(p)
    axis = np.linspace(-1.0, 1.0, n)
    occ = geom.inside_grid((axis, axis, axis))
    meta.update({"grid": n, "inside_fraction": float(occ.mean())})
    if kind == "sdf":
        q = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        sdf = np.full(len(q), SDF_TRUNCATION)
        if geom.is_mesh:
            edges = geom.mesh.edges_unique_length
            band = geom.tree().query(q)[0] <= SDF_TRUNCATION + float(edges.max())
        else:
            band = np.ones(len(q), dtype=bool)
        sdf[band] = np.minimum(geom.distance(q[band]), SDF_TRUNCATION)
        sdf = np.where(occ.reshape(-1), -sdf, sdf)
        meta.update({"sdf_truncation": SDF_TRUNCATION, "sdf_exact_points": int(band.sum()) if geom.is_mesh else 0})
        values = torch.from_numpy(sdf.astype(np.float32))[:, None].contiguous()
    else:
        values = torch.from_numpy(occ.reshape(-1, 1).astype(np.float32))
    meta["notes"] = geom.notes
    tgt = Target(kind, str(p), file_sha256(p), (n, n, n), values, meta=meta)
    tgt.evaluate = _dense_evaluator(geom, n, kind, meta)
    return tgt


def _dense_evaluator(
    geom: Geometry, n: int, kind: str, meta: dict[str, Any]
) -> Callable[[nn.Module, torch.Tensor], dict[str, Any]]:
    """The target's ``evaluate(model, out)``: IoU on the dense held-out grid (``heldout_axis``), in slabs."""
    cache: dict[str, torch.Tensor] = {}

    def evaluate(model: nn.Module, out: torch.Tensor) -> dict[str, Any]:
        axis = heldout_axis(n)
        if "truth" not in cache:  # computed once per target (compare reuses it over inits and seeds)
            cache["truth"] = torch.from_numpy(geom.inside_grid((axis, axis, axis)).reshape(-1))
        truth = cache["truth"]
        p = next(model.parameters())
        ax = torch.as_tensor(axis, dtype=p.dtype, device=p.device)
        inter = union = 0
        m = len(axis)
        rows = max(1, (1 << 16) // (m * m))
        for s in range(0, m, rows):  # slabs of the grid along x
            g = torch.meshgrid(ax[s : s + rows], ax, ax, indexing="ij")
            c = torch.stack([t.reshape(-1) for t in g], -1)
            o = predict(model, c)[:, 0].cpu()
            pred = o > 0 if kind == "occupancy" else o < 0
            tr = truth[s * m * m : (s + rows) * m * m]
            inter += int((pred & tr).sum())
            union += int((pred | tr).sum())
        for note in geom.notes:
            if note not in meta["notes"]:
                meta["notes"].append(note)
        return {"dense_heldout_iou": 1.0 if union == 0 else inter / union, "dense_heldout_grid": [m, m, m],
                "dense_heldout_inside_fraction": float(truth.float().mean())}  # fmt: skip

    return evaluate


def extract_surface(model: nn.Module, target: Target, path: str, force: bool = False) -> dict[str, Any]:
    """Marching cubes (scikit-image) of the fit on the target grid at level 0 (occupancy logit 0 = p 0.5;
    SDF 0), mapped back to the input's frame (``x = x' / scale + centre``); written by suffix."""
    if target.kind not in ("occupancy", "sdf") or target.dim != 3:
        raise TargetError(f"a mesh reconstruction needs a 3-D occupancy or SDF target, not {target.kind}")
    measure = require("skimage.measure", "mesh", "marching cubes (--recon .obj/.ply/.stl/.off)")
    out = predict(model.eval(), target.coords(dtype=next(model.parameters()).dtype))[:, 0]
    vol = out.to(torch.float64).reshape(target.shape).numpy()
    if not (vol.min() < 0 < vol.max()):
        raise TargetError("the fit has no surface on the grid (its level-0 set is empty); nothing to extract")
    spacing = tuple(2.0 / (s - 1) for s in target.shape)
    verts, faces, _, _ = measure.marching_cubes(
        vol, level=0.0, spacing=spacing, gradient_direction="ascent" if target.kind == "occupancy" else "descent"
    )
    verts = verts - 1.0
    meta = target.meta or {}
    if "scale" in meta:
        verts = verts / meta["scale"] + np.asarray(meta["centre"])
    suffix = Path(path).suffix.lower()
    if suffix == ".obj":
        atomic_write(path, lambda tmp: _write_obj(tmp, verts, faces), force)
    else:
        trimesh = require("trimesh", "mesh", f"writing {suffix}")
        mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
        atomic_write(path, lambda tmp: mesh.export(tmp, file_type=suffix[1:]), force)
    return {"vertices": int(len(verts)), "triangles": int(len(faces)),
            "frame": "input" if "scale" in meta else "[-1,1]^3"}  # fmt: skip


def _write_obj(tmp: str, verts: Floats, faces: npt.NDArray[np.integer[Any]]) -> None:
    with open(tmp, "w") as f:
        f.write("# inrdiag: marching cubes of a fitted occupancy/SDF network\n")
        f.writelines(f"v {x:.6g} {y:.6g} {z:.6g}\n" for x, y, z in verts)
        f.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)
