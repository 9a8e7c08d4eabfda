"""Inlet rank at initialisation of every scheme (and of rank-expand variants that we tried).

    python benchmarks/inlet_rank.py            # width 256, 256x256 grid, tol 1e-3, seed 0

Prints numerical / effective rank and dead units of Z_0 (the inlet's ReLU outputs) on the grid.
The "variant" rows are not schemes of inrdiag: they probe whether a simple change of the
rank-expanding recipe reaches full rank (none did; see docs/inits.md).
"""

from __future__ import annotations

import argparse
import math

import torch

from inrdiag.models.inits import SCHEMES, build_model, rank_expand_points, rank_expand_weights
from inrdiag.spectra import layer_ranks


def variant(width: int, scale: float = 1.0, eps: float = 0.01, centres: bool = False):
    model = build_model("default", 2, 1, 1, width, seed=0)
    p = int(round(math.sqrt(width)))
    if centres:
        a = torch.linspace(-1 + 1 / p, 1 - 1 / p, p, dtype=torch.float64)
        V = torch.stack(torch.meshgrid(a, a, indexing="ij"), -1).reshape(-1, 2)
    else:
        V = rank_expand_points(width, 2)
    W, b = rank_expand_weights(V * scale, eps)
    with torch.no_grad():
        model.linears[0].weight.copy_(W)
        model.linears[0].bias.copy_(b)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--grid", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shape = (args.grid, args.grid)
    rows = [(name, build_model(name, 2, 1, 1, args.width, seed=args.seed)) for name in SCHEMES]
    rows += [
        ("variant: V scaled by 0.5", variant(args.width, scale=0.5)),
        ("variant: V scaled by 1/sqrt(2)", variant(args.width, scale=1 / math.sqrt(2))),
        ("variant: V at cell centres", variant(args.width, centres=True)),
        ("variant: eps 0.1", variant(args.width, eps=0.1)),
    ]
    print(f"inlet width {args.width}, {args.grid}x{args.grid} grid in [-1,1]^2, tol 1e-3, seed {args.seed}")
    print(f"{'scheme':34s} {'num. rank':>9s} {'eff. rank':>9s} {'dead':>5s}")
    for name, model in rows:
        s = layer_ranks(model, shape)[0]
        dead = "-" if model.spec.activation != "relu" else str(s.dead_units)
        print(f"{name:34s} {s.numerical_rank:9d} {s.effective_rank:9.1f} {dead:>5s}")


if __name__ == "__main__":
    main()
