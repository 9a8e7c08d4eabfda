"""Tables, CSV and plots of studies (compare over a folder, freeze sweeps over splits and seeds)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import console, pyplot, save_figure

if TYPE_CHECKING:
    from rich.console import Console

    from ..study.compare_study import CompareStudy
    from ..study.freeze_study import FreezeStudy
    from ..study.single import CompareResult
    from ..study.stats import Summary


def write_csv(path: str, head: list[str], rows: list[list[Any]], force: bool = False) -> None:
    """Write ``head`` and ``rows`` as CSV, atomically (refused over an existing file without ``force``)."""
    import csv

    from ..files import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(head)
            w.writerows(rows)

    atomic_write(path, write, force)


def compare_result_csv(res: CompareResult) -> tuple[list[str], list[list[Any]]]:
    """The one-target compare table as tidy CSV rows (the same columns as a study's)."""
    head = ["signal", "init", "seed", "metric_name", "metric", "heldout_metric", "inlet_effective_rank",
            "inlet_numerical_rank", "seconds"]  # fmt: skip
    rows: list[list[Any]] = []
    name = Path(res.target["path"]).name
    for r in res.rows:
        for j, s in enumerate(r.seeds):
            ho = None if r.heldout_metrics is None else r.heldout_metrics[j]
            rows.append([name, r.init, s, res.metric_name, r.metrics[j], ho, r.inlet_effective_rank[j],
                         r.inlet_numerical_rank[j], r.seconds[j]])  # fmt: skip
    return head, rows


def _num(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2g}" if x < 0.01 else f"{x:.3f}")


def _ci(s: Summary) -> str:
    return "-" if s.ci_low is None else f"[{_num(s.ci_low)}, {_num(s.ci_high)}]"


def render_compare_study(rep: CompareStudy, saved: dict[str, str] | None = None) -> None:
    from rich.table import Table

    c = console()
    fit = rep.config["fit"]
    unit = " (dB)" if rep.metric_name == "PSNR" else ""
    d = 2 if rep.metric_name == "PSNR" else 4
    c.print(f"compare over {len(rep.signals)} signals: {fit['depth']}x{fit['width']}, {fit['steps']} Adam steps, "
            f"lr {fit['lr']:g}, seeds {rep.seeds}" + (f", size {rep.config['size']}" if rep.config["size"] else ""))  # fmt: skip
    t = Table(title=f"{rep.metric_name}{unit} per signal, mean over seeds", title_justify="left")
    t.add_column("signal")
    for i in rep.inits:
        t.add_column(i, justify="right")
    for s in rep.signals:
        t.add_row(s, *(_num(rep.per_signal[s][i], d) for i in rep.inits))
    c.print(t)
    t = Table(
        title=f"per init: over signals (n = {len(rep.signals)}, seed-averaged); all runs: mean ± std",
        title_justify="left",
    )
    for col in ("init", "mean ± std", "95% CI", "all runs\nmean ± std", "inlet rank\neff / num", "s/run"):
        t.add_column(col, justify="left" if col == "init" else "right", no_wrap=True)
    for summ in rep.inits_summary:
        o, a = summ.over_signals, summ.over_runs
        t.add_row(summ.init, f"{_num(o.mean, d)} ± {_num(o.std, d)}", _ci(o), f"{_num(a.mean, d)} ± {_num(a.std, d)}",
                  f"{summ.inlet_effective_rank:.1f} / {summ.inlet_numerical_rank:.0f}",
                  f"{summ.seconds_per_run:.1f}")  # fmt: skip
    c.print(t)
    for title, pairs in ((f"{rep.metric_name}", rep.paired), (f"held-out {rep.metric_name}", rep.paired_heldout)):
        if not pairs:
            continue
        t = Table(title=f"paired against {rep.baseline}: {title} gain{unit} per signal", title_justify="left")
        for col in ("init", "mean\ngain", "95% CI", "t-test\np", "Wilcoxon\np", "W/T/L", "win\nrate"):
            t.add_column(col, justify="left" if col == "init" else "right", no_wrap=True)
        for p in pairs:
            t.add_row(p.name, _num(p.gain.mean, d), _ci(p.gain), _p(p.t_p), _p(p.wilcoxon_p),
                      f"{p.wins}/{p.ties}/{p.losses}", _num(p.win_rate, 2))  # fmt: skip
        c.print(t)
    c.print(f"[dim]std with n-1; CIs Student t (95%); p two-sided; a signal's value is the mean over its "
            f"{len(rep.seeds)} seed(s); 'all runs' treats runs of one signal as independent (reference only); "
            "W/T/L: signals won, tied, lost against the baseline; inlet rank at init, mean over runs[/dim]")  # fmt: skip
    _footer(c, rep, "compare", saved)


def _footer(c: Console, rep: CompareStudy | FreezeStudy, command: str, saved: dict[str, str] | None) -> None:
    """The lines under a study's tables: where its run folder is, what was written, the notes."""
    if rep.run_dir:
        c.print(f"run folder: {rep.run_dir} (report again: inrdiag {command} --from {rep.run_dir})")
    for what, path in (saved or {}).items():
        c.print(f"wrote {what}: {path}")
    for note in rep.notes:
        c.print(f"note: {note}")


def plot_compare_study(rep: CompareStudy, path: str, force: bool = False) -> None:
    """Left: per-signal paired lines across inits (grey), mean ± std over signals (black).
    Right: histogram of per-signal gains against the baseline, one colour per init, mean marked."""
    plt = pyplot()
    unit = " (dB)" if rep.metric_name == "PSNR" else ""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = list(range(len(rep.inits)))
    for s in rep.signals:
        a.plot(xs, [rep.per_signal[s][i] for i in rep.inits], color="0.6", lw=0.8, marker=".", alpha=0.8)
    means = [s.over_signals.mean for s in rep.inits_summary]
    stds = [s.over_signals.std or 0.0 for s in rep.inits_summary]
    a.errorbar(xs, means, yerr=stds, color="black", marker="o", capsize=4, lw=2, label="mean ± std over signals")
    a.set_xticks(xs)
    a.set_xticklabels(rep.inits)
    a.set_ylabel(f"final {rep.metric_name}{unit}, mean over seeds")
    a.set_title(f"per signal (n = {len(rep.signals)}), paired lines")
    a.legend(fontsize=8, loc="best")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, p in enumerate(rep.paired):
        gains = [rep.per_signal[s][p.name] - rep.per_signal[s][rep.baseline] for s in rep.signals]
        gains = [g for g in gains if math.isfinite(g)]
        col = colors[j % len(colors)]
        b.hist(gains, bins=max(5, min(20, len(gains))), alpha=0.5, color=col,
               label=f"{p.name}: {_num(p.gain.mean)} ± {_num(p.gain.std)}")  # fmt: skip
        if p.gain.mean is not None:
            b.axvline(p.gain.mean, color=col, lw=1.5)
    b.axvline(0, color="black", lw=0.8, ls="--")
    b.set_xlabel(f"gain over {rep.baseline}{unit} (per signal)")
    b.set_ylabel("signals")
    b.set_title("paired gains (line: mean)")
    b.legend(fontsize=8, loc="best")
    fit = rep.config["fit"]
    fig.suptitle(f"compare: {len(rep.signals)} signals x {len(rep.seeds)} seeds, {fit['depth']}x{fit['width']}, "
                 f"{fit['steps']} steps")  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path, force)
    plt.close(fig)


def render_freeze_study(rep: FreezeStudy, saved: dict[str, str] | None = None) -> None:
    from rich.table import Table

    c = console()
    r = rep.config["recipe"]
    cfg = rep.config
    c.print(f"freeze-sweep study: backbone {r['backbone']}, {r['depth']}x{r['width']}, encoder K={r['shared_layers']}, "
            f"size {r['size']}, {cfg['splits']} split(s) x {cfg['seeds']} seed(s), {cfg['steps']} steps per fit")  # fmt: skip
    t = Table(title="final PSNR (dB) per split: mean over held-out images, averaged over seeds", title_justify="left")
    for col in ("split", "held-out", "k* (per seed)", "best k (per seed)", "at k*", "k=0 (fine-tune all)",
                "at best k", "scratch"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("split", "held-out") else "right")
    for row in rep.rows:
        t.add_row(str(row.split), ", ".join(row.test_images), ",".join(map(str, row.k_star)),
                  ",".join(map(str, row.best_k)), _num(row.psnr_k_star), _num(row.psnr_full), _num(row.psnr_best),
                  _num(row.psnr_scratch))  # fmt: skip
    c.print(t)
    n = rep.paired[0].n if rep.paired else 0
    t = Table(
        title=f"paired: freeze at k* against ... (dB, n = {n} (split, held-out image) units)", title_justify="left"
    )
    for col in ("against", "mean\ngain", "95% CI", "t-test\np", "Wilcoxon\np", "W/T/L", "win\nrate"):
        t.add_column(col, justify="left" if col == "against" else "right", no_wrap=True)
    for p in rep.paired:
        t.add_row(p.baseline, _num(p.gain.mean), _ci(p.gain), _p(p.t_p), _p(p.wilcoxon_p),
                  f"{p.wins}/{p.ties}/{p.losses}", _num(p.win_rate))  # fmt: skip
    c.print(t)
    c.print(f"k* equals the measured best k in {rep.agree} of {rep.jobs} (split, seed) jobs; 'best k' is chosen on "
            "the same images it is scored on (optimistic)")  # fmt: skip
    _footer(c, rep, "freeze-sweep", saved)


def plot_freeze_study(rep: FreezeStudy, path: str, force: bool = False) -> None:
    """Paired lines per (split, held-out image): final PSNR at scratch, k=0, k* and best k; mean ± std."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    labels = ["scratch", "k=0 (fine-tune all)", "k*", "best k"]
    units: list[list[float]] = []
    for sw in rep.sweeps:
        final = str(sw["steps"])

        def col(k: int | None, sw: dict[str, Any] = sw, final: str = final) -> list[float]:
            return next(r for r in sw["rows"] if r["k"] == k)["psnr"][final]

        ks, kb = sw["recommended_freeze_depth"], sw["measured_best_k"]
        units += [list(v) for v in zip(col(None), col(0), col(ks), col(kb))]
    xs = list(range(len(labels)))
    for u in units:
        ax.plot(xs, u, color="0.65", lw=0.7, marker=".", alpha=0.8)
    import statistics

    cols: list[tuple[float, ...]] = list(zip(*units)) if units else [() for _ in labels]
    means = [statistics.fmean(v) for v in cols]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in cols]
    ax.errorbar(xs, means, yerr=stds, color="black", marker="o", capsize=4, lw=2, label="mean ± std")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels)
    ax.set_ylabel("final PSNR (dB)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"freeze sweeps: {len(rep.sweeps)} (split, seed) jobs, per held-out image (grey)")
    fig.tight_layout()
    save_figure(fig, path, force)
    plt.close(fig)
