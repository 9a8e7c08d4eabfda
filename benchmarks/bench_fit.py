"""Full-batch fitting speed: inrdiag's loop vs a plain PyTorch loop vs the GEMM-bound floor.

    python benchmarks/bench_fit.py                 # 256x256 camera, 4x256 ReLU MLP, CPU

Everything runs in one process, variants interleaved over ``--rounds`` rounds (best round kept),
so the ratios hold even on a shared machine. glibc malloc tuning is process-wide and cannot be
undone, so the untuned variants all run first, then ``inrdiag.device.tune_malloc()``, then the tuned.

Floor: one step costs about 6 N P flops (forward 2NP, backward 4NP; N points, P parameters); the
floor divides that by a GEMM throughput measured here on the same shapes (N x width @ width x width).

``--cohort`` adds cohort training (``train_cohort``: one shared encoder, a head per image) against the
same model trained by a plain loop (torch's default Adam, the heads' forward written out), in the
same process; both share ``fitting.optim.adam_loop``'s path with the freeze sweep's fits.
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
sys.path.insert(0, str(ROOT))  # this checkout's inrdiag, not an installed one

from inrdiag.device import tune_malloc  # noqa: E402
from inrdiag.fitting.loop import FitConfig, fit  # noqa: E402
from inrdiag.fitting.targets import load_target  # noqa: E402


def gemm_gflops(n: int, width: int, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, width), torch.randn(width, width)
    out = torch.empty(n, width)
    torch.mm(a, b, out=out)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=out)
        reps += 1
    return 2.0 * n * width * width * reps / (time.perf_counter() - t0) / 1e9


def plain_loop(x, y, depth: int, width: int, steps: int, fused: bool = False, compile_: bool = False) -> float:
    """Seconds per step of the textbook loop: nn.Sequential, Adam, MSE, full batch."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    d = x.shape[1]
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    net = nn.Sequential(*layers, nn.Linear(d, y.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused or None)

    def step():
        loss = nn.functional.mse_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if compile_:
        step = torch.compile(step)
    step()  # warm-up (and compilation)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def plain_cohort(data, recipe, steps: int) -> float:
    """Seconds per step of the textbook cohort loop on ``train_cohort``'s models and loss."""
    from inrdiag.cohort.train import build_cohort
    from inrdiag.grid import make_grid

    H, _, C = data.values.shape
    models = build_cohort(recipe, H, C)
    params = list({id(p): p for m in models for p in m.parameters()}.values())
    opt = torch.optim.Adam(params, lr=recipe.lr)
    x = make_grid(data.shape, dtype=torch.float32)
    K = recipe.shared_layers

    def step():
        opt.zero_grad(set_to_none=True)
        feats = models[0].features(x, K - 1)
        loss = sum(torch.mean((m.head(feats, K) - data.values[d]) ** 2) for d, m in enumerate(models)) / H
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def inrdiag_cohort(data, recipe, steps: int) -> float:
    from dataclasses import replace

    from inrdiag.cohort.train import train_cohort

    train_cohort(data, replace(recipe, steps=1), device="cpu")  # warm-up
    return train_cohort(data, replace(recipe, steps=steps), device="cpu").seconds / steps


def inrdiag_loop(target, depth: int, width: int, steps: int) -> float:
    cfg = FitConfig(init="default", depth=depth, width=width, steps=steps, device="cpu", tune_malloc=False)
    fit(target, FitConfig(**{**cfg.to_dict(), "steps": 1}))  # warm-up
    return 1.0 / fit(target, cfg).steps_per_second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(ROOT / "examples/images/camera.png"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the plain step")
    ap.add_argument("--cohort", action="store_true", help="also time cohort training (4 images, --size / 2)")
    args = ap.parse_args()

    target = load_target(args.image, args.size)
    x, y = target.coords(dtype=torch.float32), target.values
    n = x.shape[0]
    params = sum(p.numel() for p in nn.Linear(2, args.width).parameters())
    params += (args.depth - 1) * (args.width * args.width + args.width) + args.width * target.channels + 1
    flops = 6.0 * n * params
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f} (start)")  # fmt: skip
    print(f"target {args.size}x{args.size} (N={n:,}), MLP {args.depth}x{args.width} (P={params:,}), "
          f"6NP = {flops / 1e9:.1f} GFLOP/step")  # fmt: skip

    variants = {
        "plain PyTorch loop": lambda: plain_loop(x, y, args.depth, args.width, args.steps),
        "plain loop, fused Adam": lambda: plain_loop(x, y, args.depth, args.width, args.steps, fused=True),
        "inrdiag fit()": lambda: inrdiag_loop(target, args.depth, args.width, args.steps),
    }
    if args.cohort:
        from inrdiag.cohort.train import CohortRecipe, list_images, load_images

        side = args.size // 2
        data = load_images(list_images(ROOT / "examples/cohort")[0][:4], side)
        rec = CohortRecipe(backbone="siren", depth=args.depth, width=args.width, shared_layers=args.depth - 1,
                           size=side, steps=args.steps)  # fmt: skip
        variants["plain cohort loop (4 heads, siren)"] = lambda: plain_cohort(data, rec, args.steps)
        variants["inrdiag train_cohort (4 heads, siren)"] = lambda: inrdiag_cohort(data, rec, args.steps)
    if args.compile:
        variants["plain loop, torch.compile"] = lambda: plain_loop(x, y, args.depth, args.width, args.steps,
                                                                   compile_=True)  # fmt: skip
    results: dict[str, float] = {}
    gemm = 0.0
    for phase in ("", " + mallopt"):
        if phase:
            print(f"tune_malloc() applied: {tune_malloc()}")
        for _ in range(args.rounds):
            gemm = max(gemm, gemm_gflops(n, args.width))
            for name, run in variants.items():
                s = run()
                key = name + phase
                results[key] = min(results.get(key, float("inf")), s)
    # The GEMM rate is a property of the machine: the best one seen in any round (least disturbed).
    print(f"GEMM {n}x{args.width} @ {args.width}x{args.width}: {gemm:.1f} GFLOP/s (best of {2 * args.rounds})")
    for phase in ("", " + mallopt"):
        results["GEMM-bound floor" + phase] = flops / (gemm * 1e9)
    print(f"load average {os.getloadavg()[0]:.2f} (end)")
    base = results["plain PyTorch loop"]
    print(f"\n{'variant':48s} {'s/step':>8s} {'steps/s':>8s} {'vs plain':>9s} {'floor/this':>10s}")
    for phase in ("", " + mallopt"):
        floor = results["GEMM-bound floor" + phase]
        for name in ["GEMM-bound floor", *variants]:
            s = results[name + phase]
            if "cohort" in name:  # its own baseline: the plain cohort loop of the same phase; no floor
                ref = results["plain cohort loop (4 heads, siren)" + phase]
                print(f"{name + phase:48s} {s:8.3f} {1 / s:8.2f} {ref / s:8.2f}x {'-':>10s}")
                continue
            print(f"{name + phase:48s} {s:8.3f} {1 / s:8.2f} {base / s:8.2f}x {floor / s:9.0%}")
    tuned = " + mallopt"
    print(f"\ninrdiag fit() (malloc tuning on, as users get it): {results['GEMM-bound floor' + tuned] / results['inrdiag fit()' + tuned]:.0%} "
          f"of the GEMM floor, {base / results['inrdiag fit()' + tuned]:.2f}x the plain PyTorch loop")  # fmt: skip


if __name__ == "__main__":
    main()
