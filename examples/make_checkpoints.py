"""Make the small example checkpoints in examples/checkpoints/ (deterministic: seeded).

    python examples/make_checkpoints.py [--out DIR] [--force]

- relu_4x256.safetensors: a freshly initialised 4x256 ReLU MLP (torch's default init), 2-D -> 1,
  the network of the inlet-rank paper; `inrdiag rank` shows its collapsed inlet.
- siren_3x64.safetensors: a small SIREN (w0 = 30, official SIREN init), 2-D -> 3 (RGB).
Both are written in inrdiag's format, so they load with no flags.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import inrdiag


def relu_4x256() -> inrdiag.CoordMLP:
    torch.manual_seed(0)
    return inrdiag.CoordMLP(inrdiag.ArchSpec(in_features=2, out_features=1, hidden=[256] * 4))


def siren_3x64() -> inrdiag.CoordMLP:
    torch.manual_seed(1)
    spec = inrdiag.ArchSpec(in_features=2, out_features=3, hidden=[64] * 3, activation="sine", w0=30.0, w0_hidden=30.0)
    model = inrdiag.CoordMLP(spec)
    with torch.no_grad():  # official SIREN init: first layer U(-1/n, 1/n), others U(-sqrt(6/n)/w0, ...)
        for k, lin in enumerate(model.linears):
            n = lin.in_features
            bound = 1.0 / n if k == 0 else math.sqrt(6.0 / n) / spec.w0_hidden
            lin.weight.uniform_(-bound, bound)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "checkpoints"))
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, make in (("relu_4x256", relu_4x256), ("siren_3x64", siren_3x64)):
        path = out / f"{name}.safetensors"
        inrdiag.save(
            make(),
            path,
            provenance={
                "init": "default" if name.startswith("relu") else "siren",
                "made_by": "examples/make_checkpoints.py",
            },
            force=args.force,
        )
        print(path)


if __name__ == "__main__":
    main()
