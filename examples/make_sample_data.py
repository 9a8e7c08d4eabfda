#!/usr/bin/env python3
"""Regenerate the small sample data shipped under ``examples/``.

This script is a maintainer tool.  Nothing in ``inrdiag`` imports it, and the
packages it needs are NOT runtime dependencies of ``inrdiag``.

What it writes (see ``examples/DATA_SOURCES.md`` for sources and licences)::

    examples/images/camera.png       128x128 8-bit grayscale
    examples/images/astronaut.png    128x128 8-bit RGB
    examples/images/coffee.png       128x128 8-bit RGB
    examples/cohort/NN_<name>.png    12 x 64x64 8-bit grayscale photographs
    examples/occupancy/bunny64.npz   key ``occupancy``: (64, 64, 64) bool

What it needs:

* Python >= 3.10 with ``numpy`` and ``Pillow``;
* ``scikit-image`` (``pip install scikit-image``): only as the source of the
  photographs bundled in its wheel (``skimage/data/*.png|jpg``).  Tested with
  scikit-image 0.26.0.  ``--check`` also uses ``scipy`` (a dependency of
  scikit-image);
* the Stanford bunny mesh ``bunny.obj`` from the Debian package
  ``glmark2-data`` (``apt-get install glmark2-data`` installs it as
  ``/usr/share/glmark2/models/bunny.obj``).  Another copy of the same
  watertight bunny can be given with ``--bunny PATH`` (plain OBJ with ``v``
  and triangular ``f`` lines).

No network access, no random numbers: the output is a pure function of the
inputs (PNG bytes may differ between zlib versions, the pixels do not).

Processing:

* images / cohort: take the largest centred square crop, then downsample
  with Pillow's Lanczos filter (an antialiased filter whose support grows
  with the reduction factor, so it averages over the source area), round to
  8 bit.  Cohort images are converted to grayscale with Pillow's ``L`` mode
  (ITU-R 601-2 luma) before resizing.
* occupancy: the mesh is centred on its bounding-box centre and scaled
  uniformly (aspect ratio kept) so that its longest side spans
  [-0.95, 0.95]; the grid holds voxel *centres* ``-1 + (i + 0.5) * 2/64``
  on each axis, indexed ``occupancy[ix, iy, iz]`` (x, y, z as in the OBJ;
  +y is the bunny's up direction).  A voxel is occupied when its centre is
  inside the closed surface, by ray-parity counting along +x, +y and +z with
  a majority vote of the three (robust to a ray grazing an edge).

Usage::

    python examples/make_sample_data.py            # writes into examples/
    python examples/make_sample_data.py --check    # also prints statistics

Optional (NOT shipped, licence unclear, see DATA_SOURCES.md)::

    python examples/make_sample_data.py --lfw-faces /tmp/lfw_faces
        # writes 12 LFW face crops (32x32 grayscale) from skimage's
        # lfw_subset.npy, for a local face-cohort experiment only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

IMAGE_SIZE = 128
# name -> (skimage.data function, mode written)
IMAGES = [
    ("camera", "L"),
    ("astronaut", "RGB"),
    ("coffee", "RGB"),
]

COHORT_SIZE = 64
# Distinct photographs bundled with scikit-image whose docstrings state CC0,
# public domain or "no known copyright restrictions" (see DATA_SOURCES.md).
COHORT = [
    "camera",
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "retina",
    "clock",
    "coins",
    "immunohistochemistry",
    "cell",
    "brick",
    "text",
]

GRID = 64
MARGIN = 0.05  # the mesh's longest side spans [-1 + MARGIN, 1 - MARGIN]
DEFAULT_BUNNY = Path("/usr/share/glmark2/models/bunny.obj")


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------
def _skimage_data(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError:  # pragma: no cover - maintainer tool
        sys.exit("scikit-image is needed: pip install scikit-image")
    return np.asarray(getattr(skimage.data, name)())


def center_square_resize(img: Image.Image, size: int) -> Image.Image:
    """Largest centred square crop, then antialiased downsampling."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    if s < size:
        raise ValueError(f"source {w}x{h} is smaller than {size}x{size}")
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)


def make_images(outdir: Path) -> list[Path]:
    out = []
    for name, mode in IMAGES:
        img = Image.fromarray(_skimage_data(name)).convert(mode)
        img = center_square_resize(img, IMAGE_SIZE)
        path = outdir / f"{name}.png"
        _save_png(img, path)
        out.append(path)
    return out


def make_cohort(outdir: Path) -> list[Path]:
    out = []
    for idx, name in enumerate(COHORT):
        img = Image.fromarray(_skimage_data(name)).convert("L")
        img = center_square_resize(img, COHORT_SIZE)
        path = outdir / f"{idx:02d}_{name}.png"
        _save_png(img, path)
        out.append(path)
    return out


def make_lfw_faces(outdir: Path, count: int = 12, size: int = 32) -> list[Path]:
    """Optional, not shipped: first `count` faces of skimage's lfw_subset."""
    faces = _skimage_data("lfw_subset")[:100]  # float in [0, 1]; 100 faces
    out = []
    for idx in range(count):
        arr = np.clip(np.rint(faces[idx].astype(np.float64) * 255.0), 0, 255)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
        img = img.resize((size, size), Image.Resampling.LANCZOS)
        path = outdir / f"face_{idx:03d}.png"
        _save_png(img, path)
        out.append(path)
    return out


# --------------------------------------------------------------------------
# occupancy
# --------------------------------------------------------------------------
def load_obj_triangles(path: Path) -> np.ndarray:
    """(F, 3, 3) float64 triangle corners from a plain OBJ file."""
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    with open(path, encoding="ascii", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                verts.append([float(t) for t in parts[1:4]])
            elif parts[0] == "f":
                idx = [int(t.split("/")[0]) for t in parts[1:]]
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                for k in range(1, len(idx) - 1):  # fan-triangulate polygons
                    faces.append([idx[0], idx[k], idx[k + 1]])
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    return v[f]


def normalise(tris: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    """Centre on the bbox centre, scale uniformly into [-1+m, 1-m]^3."""
    pts = tris.reshape(-1, 3)
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    half = (hi - lo).max() / 2
    return (tris - centre) * ((1.0 - margin) / half)


def _parity_along(tris: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Inside test of every voxel centre by counting surface crossings of the
    ray that runs along +`axis` through it.  Returns bool (n, n, n) indexed
    [x, y, z]."""
    u_ax, v_ax = [a for a in range(3) if a != axis]
    p0, p1, p2 = tris[:, 0], tris[:, 1], tris[:, 2]
    # projected 2-D triangles
    a = np.stack([p0[:, u_ax], p0[:, v_ax]], 1)
    b = np.stack([p1[:, u_ax], p1[:, v_ax]], 1)
    c = np.stack([p2[:, u_ax], p2[:, v_ax]], 1)
    h = 2.0 / n

    def to_index_lo(x):  # first grid index whose centre is >= x
        return np.ceil((x + 1.0) / h - 0.5).astype(np.int64)

    def to_index_hi(x):  # last grid index whose centre is <= x
        return np.floor((x + 1.0) / h - 0.5).astype(np.int64)

    umin = np.minimum(np.minimum(a[:, 0], b[:, 0]), c[:, 0])
    umax = np.maximum(np.maximum(a[:, 0], b[:, 0]), c[:, 0])
    vmin = np.minimum(np.minimum(a[:, 1], b[:, 1]), c[:, 1])
    vmax = np.maximum(np.maximum(a[:, 1], b[:, 1]), c[:, 1])
    i0 = np.clip(to_index_lo(umin), 0, n)
    i1 = np.clip(to_index_hi(umax), -1, n - 1)
    j0 = np.clip(to_index_lo(vmin), 0, n)
    j1 = np.clip(to_index_hi(vmax), -1, n - 1)
    ni = np.maximum(i1 - i0 + 1, 0)
    nj = np.maximum(j1 - j0 + 1, 0)
    cnt = ni * nj
    tri = np.repeat(np.arange(len(tris)), cnt)
    # enumerate the candidate grid columns of each triangle's bounding box
    start = np.repeat(np.cumsum(cnt) - cnt, cnt)
    local = np.arange(cnt.sum()) - start
    gi = i0[tri] + local // nj[tri]
    gj = j0[tri] + local % nj[tri]
    pu = -1.0 + (gi + 0.5) * h
    pv = -1.0 + (gj + 0.5) * h

    A, B, C = a[tri], b[tri], c[tri]

    def edge(P, Q, x, y):
        return (Q[:, 0] - P[:, 0]) * (y - P[:, 1]) - (Q[:, 1] - P[:, 1]) * (x - P[:, 0])

    w0 = edge(B, C, pu, pv)
    w1 = edge(C, A, pu, pv)
    w2 = edge(A, B, pu, pv)
    area = w0 + w1 + w2
    inside = ((w0 > 0) & (w1 > 0) & (w2 > 0)) | ((w0 < 0) & (w1 < 0) & (w2 < 0))
    inside &= area != 0
    tri, gi, gj = tri[inside], gi[inside], gj[inside]
    w0, w1, w2, area = w0[inside], w1[inside], w2[inside], area[inside]
    depth = (w0 * p0[tri, axis] + w1 * p1[tri, axis] + w2 * p2[tri, axis]) / area
    # the crossing lies below every voxel centre with index >= k0
    k0 = np.floor((depth + 1.0) / h - 0.5).astype(np.int64) + 1
    k0 = np.clip(k0, 0, n)
    counts = np.zeros((n, n, n + 1), dtype=np.int32)  # [u, v, axis]
    np.add.at(counts, (gi, gj, k0), 1)
    crossings_below = np.cumsum(counts[:, :, :n], axis=2)
    occ_uva = (crossings_below % 2) == 1
    # reorder [u, v, axis] -> [x, y, z]
    order = [u_ax, v_ax, axis]
    return np.transpose(occ_uva, np.argsort(order))


def voxelise(tris: np.ndarray, n: int = GRID) -> np.ndarray:
    votes = sum(_parity_along(tris, n, ax).astype(np.int8) for ax in range(3))
    return votes >= 2


def make_occupancy(outdir: Path, bunny: Path) -> tuple[Path, np.ndarray]:
    if not bunny.is_file():
        sys.exit(f"bunny mesh not found at {bunny}: apt-get install glmark2-data, or pass --bunny PATH")
    tris = normalise(load_obj_triangles(bunny))
    vol = voxelise(tris, GRID)
    path = outdir / "bunny64.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, occupancy=vol.astype(bool))
    return path, vol


# --------------------------------------------------------------------------
def _components(vol: np.ndarray) -> int:
    """Number of 6-connected components of the occupied voxels."""
    from scipy import ndimage  # scipy comes with scikit-image

    _, num = ndimage.label(vol)
    return int(num)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="examples/ folder")
    ap.add_argument("--bunny", type=Path, default=DEFAULT_BUNNY)
    ap.add_argument("--check", action="store_true", help="print statistics")
    ap.add_argument(
        "--lfw-faces",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write 12 LFW faces (32x32) to DIR (not shipped)",
    )
    args = ap.parse_args(argv)

    written = make_images(args.out / "images")
    written += make_cohort(args.out / "cohort")
    occ_path, vol = make_occupancy(args.out / "occupancy", args.bunny)
    written.append(occ_path)
    if args.lfw_faces is not None:
        written += make_lfw_faces(args.lfw_faces)

    for p in written:
        print(f"{os.path.relpath(p)}  {p.stat().st_size} bytes")
    if args.check:
        print(
            f"bunny occupied fraction: {vol.mean():.4f} "
            f"({int(vol.sum())} of {vol.size} voxels), "
            f"6-connected components: {_components(vol)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
