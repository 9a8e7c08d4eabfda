"""SAE single-atom ablations (issue 6): batched, exact ablation of every atom vs one full forward pass per atom.

    python benchmarks/bench_sae.py            # 4x256 SIREN, 256x256 grid, layer 1, 4096 atoms, k=32

Model: a fresh 4x256 SIREN (scalar output, seed 0; --init for another scheme, --model for a checkpoint).
A fresh ReLU net's layer-1 activations have low rank (the inlet paper's point), so most of 4096 atoms stay
dead on it; SIREN's do not. The target is camera.png resampled to
the grid. The SAE is trained briefly (--steps): the ablation cost depends on the number of non-zero codes
(N * L0), not on how good the SAE is. The baseline ablates atoms one at a time the plain way: subtract the
atom's rank-1 term from the reconstruction and run the whole network from the coordinates (what the
issue rules out), and, fairer, only the layers after K; both are timed on --sample atoms and scaled to
all atoms (running all would take many minutes), and their results are compared with the batched ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inrdiag.checkpoints.load import load  # noqa: E402
from inrdiag.fitting.targets import load_target, match_channels  # noqa: E402
from inrdiag.grid import make_grid  # noqa: E402
from inrdiag.models.adapter import as_adapter  # noqa: E402
from inrdiag.models.inits import build_model  # noqa: E402
from inrdiag.sae.analysis import Scorer, ablate_atoms, layer_activations, splice_forward  # noqa: E402
from inrdiag.sae.model import SAEConfig, encode_all, train_sae  # noqa: E402


class Whole(nn.Module):
    """The model behind a wrapper: its adapter is no chain, so ``splice`` runs the whole forward pass from the
    coordinates with layer K's representation swapped in by a hook (the naive one-pass-per-atom baseline)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a checkpoint (default: a fresh 4x256 model, --init)")
    ap.add_argument("--init", default="siren", help="scheme of the fresh 4x256 model (inrdiag fit --init)")
    ap.add_argument("--grid", type=int, default=256)
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--atoms", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--sample", type=int, default=16, help="atoms ablated the plain way (timed, then scaled)")
    args = ap.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    if args.model:
        model, name = load(args.model).model.float().eval(), Path(args.model).name
    else:
        model, name = build_model(args.init, 2, 1, 4, 256, seed=0).eval(), f"fresh 4x256 {args.init} (seed 0)"
    shape = (args.grid, args.grid)
    x = make_grid(shape, dtype=torch.float32)
    y, _ = match_channels(
        load_target(ROOT / "examples/images/camera.png", size=args.grid).values, 1
    )  # luma, as the CLI
    n = x.shape[0]
    with torch.no_grad():
        z = layer_activations(model, x, args.layer)
    t0 = time.perf_counter()
    cfg = SAEConfig(atoms=args.atoms, k=args.k, steps=args.steps, batch_size=1024)
    sae = train_sae(z, cfg).sae
    t_train = time.perf_counter() - t0
    codes = encode_all(sae, z)
    live = torch.unique(codes.atoms)
    scorer = Scorer("image", y)
    P = sum(p.numel() for p in model.parameters())
    print(f"model {name}: {P:,} parameters; layer {args.layer} ({z.shape[1]} units); "
          f"N = {n:,} points; SAE {args.atoms} atoms, TopK k={args.k}, trained {args.steps} steps in {t_train:.1f} s")  # fmt: skip
    print(f"non-zero codes: {codes.values.numel():,} (L0 = {codes.values.numel() / n:.2f}); live atoms {live.numel()}")

    # batched: every live atom
    t0 = time.perf_counter()
    ab = ablate_atoms(model, args.layer, sae, codes, scorer, atoms=live.tolist())
    t_batched = time.perf_counter() - t0
    base = scorer.value(ab.base)
    drops = [base - v for v in scorer.values(ab.totals)]
    suffix = sum(lin.weight.numel() for lin in model.linears[args.layer + 1 :])
    gflop = 2.0 * codes.values.numel() * suffix / 1e9
    print(f"batched exact ablation of all {live.numel()} live atoms: {t_batched:.2f} s "
          f"({gflop:.1f} GFLOP in the layers after {args.layer}: {gflop / t_batched:.1f} GFLOP/s); "
          f"largest PSNR drop {max(drops):.3f} dB")  # fmt: skip

    # plain: per atom, subtract its rank-1 term from the reconstruction and run (a) the whole network from
    # the coordinates (the naive way) and (b) only the layers after K; on a sample of atoms, then scaled.
    # Both are the adapter's partial passes (a hooked full forward of the wrapped model; the chain's suffix).
    whole = as_adapter(Whole(model), in_features=model.spec.in_features)
    assert whole.layers[args.layer + 1].module is model.linears[args.layer + 1]
    g = torch.Generator().manual_seed(0)
    sample = live[torch.randperm(live.numel(), generator=g)[: args.sample]]
    times = {"whole": 0.0, "suffix": 0.0}
    worst = 0.0
    with torch.no_grad():
        for j in sample.tolist():
            sel = codes.atoms == j
            col = torch.zeros(n, 1)
            col[codes.rows[sel], 0] = codes.values[sel]
            zj = codes.recon - col * sae.W_dec[j]
            t0 = time.perf_counter()
            a = splice_forward(whole, args.layer, zj, x)
            want = scorer.value(scorer.point_stats(a).sum(0))
            times["whole"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            b = splice_forward(model, args.layer, zj)
            scorer.value(scorer.point_stats(b).sum(0))
            times["suffix"] += time.perf_counter() - t0
            got = scorer.value(ab.totals[(live == j).nonzero()[0, 0]])
            worst = max(worst, abs(want - got))
    for name, label in (("whole", "whole network from the coordinates"), ("suffix", "layers after K only")):
        per = times[name] / sample.numel()
        est, every = per * live.numel(), per * sae.d_sae
        print(f"plain, one pass per atom ({label}): {per:.3f} s per atom on {sample.numel()} sampled atoms -> "
              f"{est:.0f} s for the {live.numel()} live atoms, {every:.0f} s for all {sae.d_sae} (scaled); "
              f"batched is {est / t_batched:.0f}x / {every / t_batched:.0f}x faster")  # fmt: skip
    print(f"max |PSNR difference| batched vs plain on the sample: {worst:.2e} dB")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
