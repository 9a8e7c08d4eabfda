"""Summaries and paired statistics for studies.

The papers' claims are paired claims ("rank-expand beats default on the same image"), so the
comparison of two inits is made on per-signal differences ``d_i = a_i - b_i`` (each value the mean
over seeds of that signal's runs), not on two independent samples:

- mean gain ``mean(d)`` with a 95% confidence interval ``mean(d) ± t_{0.975, n-1} * sd(d) / sqrt(n)``
  (Student t; sd with n-1);
- paired t-test p-value: ``t = mean(d) / (sd(d) / sqrt(n))``, two-sided, n-1 degrees of freedom
  (equal to ``scipy.stats.ttest_rel(a, b)``);
- Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon(d)``, two-sided; exact for small n without
  ties, the normal approximation otherwise; zero differences dropped, as Wilcoxon's original test);
- wins / ties / losses and the win rate ``(wins + ties / 2) / n``.

Anything undefined (a CI or a t-test with one signal, a test when every difference is zero) is
None, never a made-up number. scipy is imported only here, when statistics are computed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

#: Confidence level of every interval.
LEVEL = 0.95


@dataclass
class Summary:
    """Mean, sample std (n-1) and 95% t-interval of a list of numbers (non-finite values excluded)."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    #: Values that were NaN/inf and left out (e.g. an exact fit's infinite PSNR).
    excluded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": [self.ci_low, self.ci_high],
                "excluded": self.excluded}  # fmt: skip


def _t_quantile(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + LEVEL / 2, n - 1))


def summarize(values: list[float]) -> Summary:
    """``Summary`` of ``values``: mean, std (n-1), mean ± t_{0.975, n-1} std / sqrt(n)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    excluded = len(values) - len(finite)
    n = len(finite)
    if n == 0:
        return Summary(0, None, None, None, None, excluded)
    mean = statistics.fmean(finite)
    if n == 1:
        return Summary(1, mean, None, None, None, excluded)
    std = statistics.stdev(finite)
    half = _t_quantile(n) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, excluded)


@dataclass
class Paired:
    """Paired comparison of ``a`` (an init) against ``b`` (the baseline) over the same signals."""

    name: str
    baseline: str
    n: int
    gain: Summary
    t_statistic: float | None
    t_p: float | None
    wilcoxon_p: float | None
    wins: int
    ties: int
    losses: int

    @property
    def win_rate(self) -> float | None:
        return None if self.n == 0 else (self.wins + self.ties / 2) / self.n

    def to_dict(self) -> dict[str, Any]:
        return {
            "init": self.name, "baseline": self.baseline, "n": self.n, "mean_gain": self.gain.mean,
            "gain_std": self.gain.std, "gain_ci95": [self.gain.ci_low, self.gain.ci_high],
            "t_statistic": self.t_statistic, "t_p": self.t_p, "wilcoxon_p": self.wilcoxon_p,
            "wins": self.wins, "ties": self.ties, "losses": self.losses, "win_rate": self.win_rate,
        }  # fmt: skip


def paired(a: list[float], b: list[float], name: str = "a", baseline: str = "b") -> Paired:
    """Paired statistics of ``a - b`` (same length, same order of signals). Pairs where either value
    is not finite are dropped (counted out of n)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")  # pragma: no cover
    d = [float(x) - float(y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    n = len(d)
    gain = summarize(d)
    wins = sum(x > 0 for x in d)
    ties = sum(x == 0 for x in d)
    losses = n - wins - ties
    t_stat = t_p = w_p = None
    if n >= 2 and gain.mean is not None and gain.std is not None and gain.std > 0:
        from scipy import stats

        t_stat = gain.mean / (gain.std / math.sqrt(n))
        t_p = float(2 * stats.t.sf(abs(t_stat), n - 1))
    if n >= 1 and any(x != 0 for x in d):
        w_p = wilcoxon_p(d)
    return Paired(name, baseline, n, gain, t_stat, t_p, w_p, wins, ties, losses)


def wilcoxon_p(d: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of the differences ``d`` (zeros dropped)."""
    import warnings

    from scipy import stats

    nonzero = [x for x in d if x != 0]
    if not nonzero:
        return None
    with warnings.catch_warnings():  # small-sample and ties warnings: the method is stated in the docs
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
    p = float(res.pvalue)
    return p if math.isfinite(p) else None
