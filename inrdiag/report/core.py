"""Tables and plots for ``info``, ``rank`` and ``check``."""

from __future__ import annotations

from .common import console, fmt, pyplot, save_figure, sparkline


def render_info(loaded) -> None:
    from rich.table import Table

    spec = loaded.spec
    c = console()
    src = loaded.sources
    c.print(f"[bold]{loaded.path}[/bold]")
    c.print(f"  format     {loaded.file_format}")
    c.print(f"  layout     {loaded.layout}")
    act = spec.activation
    c.print(f"  activation {act}  [dim]({src.get('activation', '')})[/dim]")
    if act in ("sine", "finer", "gauss"):
        c.print(
            f"  w0         first {fmt(spec.w0)}, hidden {fmt(spec.w0_hidden)}  [dim]({src.get('w0', '')}; hidden: {src.get('w0_hidden', '')})[/dim]"
        )
    enc = spec.encoding
    if enc == "fourier":
        enc += f" (B: {spec.fourier_features} x {spec.in_features})"
    elif enc == "positional":
        enc += f" (L={spec.frequencies}, include_input={spec.include_input})"
    c.print(f"  encoding   {enc}  [dim]({src.get('encoding', '')})[/dim]")
    c.print(f"  input      {spec.in_features}-D coordinates -> {spec.out_features} output(s)")
    if spec.batchnorm:
        c.print(f"  batch norm after hidden layers {spec.batchnorm} (evaluated in eval mode)")
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
    for ti in loaded.tensors:
        t.add_row(ti.key, str(ti.shape), ti.dtype, "yes" if ti.used else "[yellow]no[/yellow]", ti.role)
    c.print(t)
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
