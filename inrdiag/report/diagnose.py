"""Tables and plots for ``info``, ``rank`` and ``check``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import CYCLE, INLET_COLOR, console, fmt, pyplot, role_name, save_figure, sparkline

if TYPE_CHECKING:
    from ..checkpoints.load import Loaded
    from ..checks import CheckReport
    from ..models.usercode import UserLoaded
    from ..spectra import RankReport


def render_info(loaded: Loaded, max_tensor_rows: int = 200) -> None:
    """What was loaded and where each property came from. The tensor table shows at most
    ``max_tensor_rows`` rows (used tensors first; ``info --json`` lists every one), so a file of a
    million tiny tensors prints in a second, not a minute."""
    from rich.table import Table

    spec = loaded.spec
    c = console()
    src = loaded.sources

    def line(label: str, value: str, *keys: str) -> None:
        where = "; ".join(f"{k}: {src[k]}" if len(keys) > 1 else src[k] for k in keys if k in src)
        c.print(f"  {label:<10} {value}" + (f"  [dim]({where})[/dim]" if where else ""), highlight=False)

    c.print(f"[bold]{loaded.path}[/bold]")
    c.print(f"  format     {loaded.file_format}")
    c.print(f"  layout     {loaded.layout}")
    act = spec.activation
    line("activation", act, "activation")
    if act in ("sine", "finer", "gauss") or spec.out_activation in ("sine", "finer", "gauss"):
        line("w0", f"first {fmt(spec.w0)}, hidden {fmt(spec.w0_hidden)}", "w0", "w0_hidden")
    line("output", "linear" if spec.out_activation == "none" else spec.out_activation, "out_activation")
    enc = spec.encoding
    keys = ["encoding"]
    if enc == "fourier":
        enc += f" ({spec.ff_convention}, B: {spec.fourier_features} x {spec.in_features}"
        enc += ", then x)" if spec.ff_include_input else ")"
        keys.append("ff_convention")
    elif enc == "positional":
        enc += f" ({spec.pe_convention}, L={spec.frequencies}, include_input={spec.include_input}"
        if spec.pe_convention == "nerfstudio":
            enc += f", exponents {fmt(spec.pe_min_exp)}..{fmt(spec.pe_max_exp)}"
        enc += ")"
        keys += ["pe_convention", "frequencies"]
    line("encoding", enc, *keys)
    c.print(f"  input      {spec.in_features}-D coordinates -> {spec.out_features} output(s)")
    line("bias", "yes" if spec.bias else "no", "bias")
    line("batch norm", f"after hidden layers {spec.batchnorm} (eval mode)" if spec.batchnorm else "none", "batchnorm")
    if "order" in src:
        line("order", "by key name", "order")
    if loaded.heads is not None:
        c.print(
            f"  cohort     {loaded.heads} heads, {loaded.shared_layers} shared layers; showing head {loaded.head} (--head D)"
        )
    c.print(f"  parameters {loaded.model.num_parameters:,}")
    t = Table(title="linear layers", title_justify="left")
    for col in ("#", "source key", "shape (out, in)", "role"):
        t.add_column(col)
    last = spec.num_linear - 1
    for k, (key, (o, i)) in enumerate(zip(loaded.layer_keys, spec.layer_shapes)):
        role = "inlet" if k == 0 else ("output head" if k == last else "hidden")
        if loaded.shared_layers is not None:
            role += ", shared" if k < loaded.shared_layers else f", head {loaded.head}"
        t.add_row(str(k), key, f"({o}, {i})", role)
    c.print(t)
    t = Table(title="tensors in the file", title_justify="left")
    for col in ("key", "shape", "dtype", "used", "role / why not"):
        t.add_column(col)
    rows = loaded.tensors
    # Used tensors first, then the unused ones, up to max_tensor_rows in all.
    shown = ([ti for ti in rows if ti.used] + [ti for ti in rows if not ti.used])[:max_tensor_rows]
    for ti in shown:
        t.add_row(ti.key, str(ti.shape), ti.dtype, "yes" if ti.used else "[yellow]no[/yellow]", ti.role)
    c.print(t)
    if len(rows) > len(shown):
        unused = sum(1 for ti in rows if not ti.used)
        c.print(
            f"... and {len(rows) - len(shown):,} more entries ({unused:,} unused in all); `info --json` lists every one"
        )
    if loaded.nonfinite:
        c.print(f"[red]non-finite values (NaN/Inf) in: {', '.join(loaded.nonfinite)}[/red]")
    for note in loaded.notes:
        c.print(f"note: {note}")
    if loaded.provenance:
        c.print("provenance: " + ", ".join(f"{k}={v}" for k, v in loaded.provenance.items()))


def render_rank(rep: RankReport, loaded: Loaded | UserLoaded | None = None) -> None:
    from rich.table import Table

    c = console()
    shape = "x".join(map(str, rep.grid_shape))
    t = Table(title=f"rank diagnostics on a {shape} grid in [-1,1]^{len(rep.grid_shape)} "
                    f"(N={rep.points:,}, tol {rep.tol:g} of s_max, activation {rep.activation})",
              title_justify="left")  # fmt: skip
    cols = ("#", "layer", "shape", "W stable\nrank", "num.\nrank", "eff.\nrank", "stable\nrank", "dead\nunits")
    for col in cols:
        t.add_column(col, justify="left" if col == "layer" else "right", no_wrap=True)
    last = len(rep.layers) - 1
    for layer in rep.layers:
        r = layer.representation
        role = "inlet" if layer.index == 0 else "head" if layer.index == last else "hidden"
        shape_s = f"{layer.out_features}x{layer.in_features}"
        if r is None:
            t.add_row(str(layer.index), role, shape_s, fmt(layer.weight_stable_rank), "-", "-", "-", "-")
            continue
        dead = "-" if r.dead_units is None else f"{r.dead_units} {r.dead_units / layer.out_features:.0%}"
        t.add_row(
            str(layer.index), role, shape_s, fmt(layer.weight_stable_rank),
            f"{r.numerical_rank} {r.numerical_rank_fraction:.0%}",
            f"{r.effective_rank:.1f} {r.effective_rank_fraction:.0%}",
            f"{r.stable_rank:.2f} {r.stable_rank_fraction:.1%}", dead,
        )  # fmt: skip
    c.print(t)
    c.print("[dim]fractions are of min(N, width); effective rank = exp(entropy of s/sum s) (Roy & Vetterli)[/dim]")
    srs = [rep.layers[k].weight_stable_rank for k in rep.freeze_candidates]
    curve = "  ".join(f"{k}:{fmt(v)}" for k, v in zip(rep.freeze_candidates, srs))
    c.print(f"weight stable rank by layer  {sparkline(srs)}  {curve}")
    k = rep.recommended_freeze_depth
    c.print(f"[bold]recommended freeze depth: {k}[/bold] (freeze linear layers 0..{k - 1}; "
            f"layer {k - 1} has the highest weight stable rank)")  # fmt: skip
    for note in rep.notes:
        c.print(f"note: {note}")


#: Lowest s_i / s_1 a rank plot shows: the Gram-matrix method's float64 floor (see ``inrdiag.spectra``);
#: smaller values are rounding, not signal.
SPECTRUM_FLOOR = 1e-7


def plot_rank(rep: RankReport, path: str, force: bool = False) -> None:
    """Left: s_i / s_1 of every hidden layer's Z_k against the rank fraction i / min(N, width), floored at the
    method's accuracy, the inlet drawn in its colour, its numerical (|) and effective (o) rank marked.
    Right: per linear layer, weight stable rank and representation effective rank, the freeze depth marked."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 4.0), gridspec_kw={"width_ratios": [1.25, 1]})
    last = len(rep.layers) - 1
    k = 0
    for layer in rep.layers:
        r = layer.representation
        if r is None or not r.singular_values or r.singular_values[0] <= 0:
            continue
        s1 = r.singular_values[0]
        y = [max(v / s1, SPECTRUM_FLOOR) for v in r.singular_values]
        x = [(i + 1) / r.max_rank for i in range(len(y))]
        inlet = layer.index == 0
        color = INLET_COLOR if inlet else CYCLE[k % len(CYCLE)]
        k += 0 if inlet else 1
        label = (f"{role_name(layer.index, last)}: eff. {r.effective_rank:.1f} ({r.effective_rank_fraction:.0%}), "
                 f"num. {r.numerical_rank} ({r.numerical_rank_fraction:.0%})")  # fmt: skip
        ax.semilogy(x, y, color=color, lw=2.4 if inlet else 1.2, label=label, zorder=3 if inlet else 2)
        nr = r.numerical_rank
        if 1 <= nr <= len(y):
            ax.plot([x[nr - 1]], [y[nr - 1]], marker="|", ms=12, mew=2, color=color, zorder=4)
        e = min(len(y), max(1, round(r.effective_rank)))
        ax.plot([x[e - 1]], [y[e - 1]], marker="o", ms=6, mfc="white", mew=1.5, color=color, zorder=4)
    ax.axhline(rep.tol, color="0.4", ls="--", lw=0.8)
    ax.text(1.0, rep.tol, f" tol {rep.tol:g}", va="bottom", ha="right", fontsize=7, color="0.3")
    ax.axhspan(SPECTRUM_FLOOR / 10, SPECTRUM_FLOOR * 1.5, color="0.85", lw=0, zorder=0)
    ax.text(1.0, SPECTRUM_FLOOR * 1.6, "method accuracy ~1e-7 s_1 ", va="bottom", ha="right", fontsize=7, color="0.4")
    ax.set_ylim(SPECTRUM_FLOOR / 2, 2)
    ax.set_xscale("log")
    ax.set_xlim(right=1.0)
    ax.set_xlabel("rank fraction i / min(N, width), log scale")
    ax.set_ylabel("s_i / s_1")
    shape = "x".join(map(str, rep.grid_shape))
    ax.set_title(f"representation spectra, {shape} grid  (| numerical, o effective rank)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 0.08))
    # right: ranks per layer
    idx = [layer.index for layer in rep.layers]
    names = [role_name(i, last) for i in idx]
    ws = [layer.weight_stable_rank for layer in rep.layers]
    eff = [layer.representation.effective_rank if layer.representation else 0.0 for layer in rep.layers]
    w = 0.38
    bars = bx.bar([i - w / 2 for i in idx], ws, w, color=CYCLE[0], label=r"weight stable rank $\|W\|_F^2 / \|W\|_2^2$")
    bx.bar([i + w / 2 for i in idx], eff, w, color=CYCLE[1], label="representation effective rank")
    bars[0].set_color(INLET_COLOR)
    for i, v in zip(idx, ws):
        bx.text(i - w / 2, v, f"{v:.0f}" if v >= 10 else f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    top = (max(ws + eff) or 1) * 1.3
    bx.set_ylim(0, top)
    kf = rep.recommended_freeze_depth
    if kf:
        bx.axvline(kf - 0.5, color="0.3", ls=":", lw=1)
        bx.text(kf - 0.5, top * 0.98, f" recommended: freeze 0..{kf - 1}", ha="left", va="top", fontsize=8)
    bx.set_xticks(idx, names, rotation=0)
    bx.set_ylabel("rank")
    bx.set_title("ranks per layer")
    bx.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    save_figure(fig, path, force)
    plt.close(fig)


def render_check(rep: CheckReport) -> None:
    from rich.table import Table

    c = console()
    t = Table(title="inrdiag check", title_justify="left")
    for col in ("check", "value", "threshold", "result", "detail"):
        t.add_column(col)
    for r in rep.rows:
        res = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "[dim]n/a[/dim]"}[r.passed]
        thr = f"{r.op} {fmt(r.threshold)}" if r.threshold is not None else "-"
        t.add_row(r.name, fmt(r.value), thr, res, r.detail)
    c.print(t)
    for note in rep.notes:
        c.print(f"note: {note}")
    c.print("[green]all checks passed[/green]" if rep.passed else "[red]some checks failed (exit 1)[/red]")
