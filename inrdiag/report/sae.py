"""Table and atom-map figure for ``inrdiag sae``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..sae.config import ATOM_MAPS, SHOW_ROWS
from .common import console, fmt, pyplot, save_figure

if TYPE_CHECKING:
    from ..fitting.targets import Target
    from ..sae.analysis import SAEReport
    from ..sae.model import Codes


def _metric(name: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f} dB" if name == "PSNR" else f"{v:.4f}"


def _where(layer: int) -> str:
    return "the inlet (layer 0)" if layer == 0 else f"layer {layer}"


@dataclass
class FileDescription:
    """A loaded SAE file in words: ``what`` (architecture and sparsity, as the file states them) and ``how``
    (how and on what it was trained, who wrote it)."""

    what: str
    how: str


def describe_file(src: dict[str, Any]) -> FileDescription:
    """``FileDescription`` of a loaded SAE file from its ``sae_file_info``."""
    arch = src["architecture"]
    if arch == "topk":
        what = f"TopK k={src['k']}" + (" (rescale_acts_by_decoder_norm, folded exactly)"
                                       if src.get("rescale_acts_by_decoder_norm") else "")  # fmt: skip
    elif arch == "jumprelu":
        t = src["threshold"]
        what = f"JumpReLU, thresholds {fmt(t['min'])}..{fmt(t['max'])} (median {fmt(t['median'])})"
        if src.get("converted_from") == "topk_threshold":
            what += ", from a BatchTopK training file"
    else:
        what = "ReLU (SAELens 'standard')"
    tr = src.get("training") or {}
    if tr.get("by") == "inrdiag":
        how = f"trained by inrdiag: {tr.get('steps')} steps, batch {tr.get('batch_size')}, Adam lr {tr.get('lr')}"
        how += f", L1 {tr.get('l1')}" if tr.get("kind") == "relu" else ""
    elif tr:
        how = "training settings: " + ", ".join(f"{k} {v}" for k, v in tr.items() if k != "by")
    else:
        how = "training settings not in the file"
    version = f" (SAELens format {src['sae_lens_version']})" if src.get("sae_lens_version") else ""
    how += f"; written by {src['written_by']}{version}; model {src.get('model_name') or 'not recorded'}, "
    how += f"hook {src.get('hook_name') or 'not recorded'}"
    return FileDescription(what=what, how=how)


def render_sae(rep: SAEReport, show_n: int = SHOW_ROWS) -> None:
    """The report as tables (a loaded SAE file is described by its own settings, ``rep.source``)."""
    from rich.table import Table

    c = console()
    cfg = rep.config
    grid = f"{rep.points:,} grid points {'x'.join(map(str, rep.grid))}"
    source = rep.source
    if source:
        desc = describe_file(source)
        c.print(f"SAE from {source['folder']} on {_where(rep.layer)} ({rep.layer_name}, {rep.width} units) over "
                f"{grid}: {source['d_sae']} atoms, {desc.what}")  # fmt: skip
        c.print(f"  {desc.how}")
    else:
        arch = {"topk": f"TopK k={cfg.k}", "jumprelu": "JumpReLU"}.get(rep.architecture, f"ReLU + L1 {cfg.l1:g}")
        trained = f"{cfg.steps} steps, batch {cfg.batch_size}, Adam lr {cfg.lr:g}, seed {cfg.seed}"
        c.print(f"SAE on {_where(rep.layer)} ({rep.layer_name}, {rep.width} units) over {grid}: {cfg.atoms} "
                f"atoms, {arch}; {trained}")  # fmt: skip
    t = Table(title="reconstruction", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    m = rep.metric_name
    t.add_row("fraction of variance unexplained (FVU)", fmt(rep.fvu, 4))
    t.add_row("L0 (active atoms per point)", fmt(rep.l0))
    t.add_row("dead atoms (never fire on the grid)", f"{rep.dead_fraction:.1%}")
    t.add_row(f"{m}: network", _metric(m, rep.metric_model))
    t.add_row(f"{m}: SAE spliced in at {_where(rep.layer)}", _metric(m, rep.metric_spliced))
    c.print(t)
    s = rep.summary()
    cov, spr = s["coverage"], s["spread"]
    if s["live_atoms"]:
        c.print(f"atoms ({s['live_atoms']} live): coverage (fraction of the grid where an atom fires) median "
                f"{cov['median']:.2%} (p10 {cov['p10']:.2%}, p90 {cov['p90']:.2%}); spatial spread (RMS distance from "
                f"its centroid / the grid's, 1 = image-wide) median {spr['median']:.2f} "
                f"(p10 {spr['p10']:.2f}, p90 {spr['p90']:.2f})")  # fmt: skip
    if rep.ablated and show_n:
        unit = " (dB)" if m == "PSNR" else ""
        t = Table(title=f"single-atom ablations ({rep.ablated} atoms, SAE spliced in): most harmful",
                  title_justify="left")  # fmt: skip
        for col in ("atom", f"{m} drop{unit}", "coverage", "spread", "activation mass"):
            t.add_column(col, justify="right")
        for row in rep.harmful(show_n):
            t.add_row(str(row["atom"]), fmt(row["drop"]), f"{row['coverage']:.2%}", fmt(row["spread"]),
                      fmt(row["mass"]))  # fmt: skip
        c.print(t)
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in rep.seconds.items())
    c.print(f"time: {secs}")
    for note in rep.notes:
        c.print(f"note: {note}")


def plot_atoms(rep: SAEReport, codes: Codes, shape: Sequence[int], path: str, force: bool = False,
               count: int = ATOM_MAPS, target: Target | None = None) -> None:  # fmt: skip
    """Activation maps of the ``count`` most harmful atoms (by activation mass without ablations), all on one
    colour scale (one colour bar), after the target for context. Volumes: maximum over the last axis."""
    import math

    import torch

    if rep.ablation:
        chosen = [r["atom"] for r in rep.harmful(count)]
    else:
        order = sorted(range(len(rep.mass)), key=lambda j: -rep.mass[j])
        chosen = [j for j in order if rep.mass[j] > 0][:count]
    n = int(torch.tensor(shape).prod())
    maps = []
    for j in chosen:
        sel = codes.atoms == j
        img = torch.zeros(n, dtype=torch.float32)
        img[codes.rows[sel].cpu()] = codes.values[sel].float().cpu()
        img = img.reshape(shape)
        if img.dim() == 3:
            img = img.amax(-1)
        maps.append(img if img.dim() == 2 else img[None, :])
    vmax = max([float(m.max()) for m in maps] + [1e-12])
    plt = pyplot()
    panels = len(chosen) + (1 if target is not None else 0)
    cols = max(1, min(5, panels))
    rows = max(1, math.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 0.8, 2.45 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    flat = list(axes.flat)
    if target is not None:
        t = target.values.to(torch.float64)
        if target.kind == "image":
            shown = t.reshape(*target.shape, target.channels).clamp(0, 1).numpy()
            shown = shown[..., 0] if shown.shape[-1] == 1 else shown
        else:
            shown = (t[:, 0] > 0.5).reshape(target.shape).numpy().max(-1)
        flat[0].imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        flat[0].set_title("target", fontsize=8)
        flat = flat[1:]
    im = None
    unit = " dB" if rep.metric_name == "PSNR" else ""
    for ax, j, img in zip(flat, chosen, maps):
        im = ax.imshow(img.numpy(), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        label = f"atom {j}, covers {rep.coverage[j]:.1%}"
        if j in rep.ablation:
            label += f"\ndrop {rep.ablation[j]:.2f}{unit}"
        ax.set_title(label, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="atom activation (one scale for all)")
    elif not chosen:
        flat[0].set_title("no live atoms", fontsize=8)
    where = "the inlet (layer 0)" if rep.layer == 0 else f"layer {rep.layer}"
    what = "most harmful atoms (largest drop when removed)" if rep.ablation else "atoms of largest activation mass"
    vol = "; volumes: maximum over the last axis" if len(shape) == 3 else ""
    fig.suptitle(f"SAE on {where}: {what}{vol}", fontsize=10)
    save_figure(fig, path, force)
    plt.close(fig)
