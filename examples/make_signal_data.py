#!/usr/bin/env python3
"""Write the generated signal samples shipped under ``examples/signals/`` (docs/signals.md).

Everything is synthesised from formulas (numpy only, no random numbers, no input files), so the
output is a pure function of this script::

    chirp.wav         0.5 s, 8 kHz, 16-bit mono: linear chirp 200 -> 2000 Hz, amplitude 0.5, 10 ms fades
    torus.obj         watertight torus (R 0.6, r 0.25; 48 x 24 segments, 2,304 triangles), plain OBJ
    moving_disc.npy   8 x 32 x 32 x 1 uint8 video: a bright disc moving left to right on a dark gradient

Usage: ``python examples/make_signal_data.py [--out DIR]`` (default: examples/signals).
"""

from __future__ import annotations

import argparse
import struct
import wave
from pathlib import Path

import numpy as np


def chirp(rate: int = 8000, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    f0, f1 = 200.0, 2000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2)
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)
    return 0.5 * np.sin(phase) * fade


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(pcm)}h", *pcm))


def torus(R: float = 0.6, r: float = 0.25, nu: int = 48, nv: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (nu*nv x 3) and outward-oriented triangles of a torus around the z axis."""
    u = 2 * np.pi * np.arange(nu) / nu
    v = 2 * np.pi * np.arange(nv) / nv
    U, V = np.meshgrid(u, v, indexing="ij")
    verts = np.stack([(R + r * np.cos(V)) * np.cos(U), (R + r * np.cos(V)) * np.sin(U), r * np.sin(V)], -1)
    idx = np.arange(nu * nv).reshape(nu, nv)
    a, b = idx, np.roll(idx, -1, axis=0)
    c, d = np.roll(b, -1, axis=1), np.roll(a, -1, axis=1)
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return verts.reshape(-1, 3), faces


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    lines = ["# torus R=0.6 r=0.25, 48x24 segments (inrdiag examples/make_signal_data.py)"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"f {i + 1} {j + 1} {k + 1}" for i, j, k in faces]
    path.write_text("\n".join(lines) + "\n")


def moving_disc(frames: int = 8, size: int = 32) -> np.ndarray:
    y, x = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    out = []
    for k in range(frames):
        cx = -0.6 + 1.2 * k / (frames - 1)
        disc = ((x - cx) ** 2 + (y - 0.1) ** 2) < 0.3**2
        img = 0.15 + 0.2 * (x + 1) / 2 + 0.6 * disc
        out.append(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "signals"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "chirp.wav", chirp(), 8000)
    write_obj(out / "torus.obj", *torus())
    np.save(out / "moving_disc.npy", moving_disc()[..., None])  # T x H x W x 1: read as video without flags
    print(f"wrote chirp.wav, torus.obj, moving_disc.npy to {out}")


if __name__ == "__main__":
    main()
