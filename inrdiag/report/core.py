"""Tables and plots for ``info``, ``rank`` and ``check``."""

from __future__ import annotations

from .common import console, fmt, pyplot, save_figure, sparkline


def render_info(loaded, max_tensor_rows: int = 200) -> None:
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


def render_rank(rep, loaded=None) -> None:
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


def plot_rank(rep, path: str, force: bool = False) -> None:
    """Singular-value decay s_i / s_1 of every hidden layer's Z_k, log scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for layer in rep.layers:
        r = layer.representation
        if r is None or not r.singular_values or r.singular_values[0] <= 0:
            continue
        s = [v / r.singular_values[0] for v in r.singular_values]
        ax.semilogy(range(1, len(s) + 1), [max(v, 1e-16) for v in s],
                    label=f"layer {layer.index} (eff. rank {r.effective_rank:.1f})")  # fmt: skip
    ax.axhline(rep.tol, color="grey", ls="--", lw=0.8, label=f"tol {rep.tol:g}")
    ax.set_xlabel("index i")
    ax.set_ylabel("s_i / s_1")
    ax.set_ylim(bottom=1e-12)
    ax.set_title(f"representation spectra, {'x'.join(map(str, rep.grid_shape))} grid")
    ax.legend(fontsize=8)
    save_figure(fig, path, force)
    plt.close(fig)


def render_check(rep) -> None:
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
