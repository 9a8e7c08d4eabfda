"""Study statistics against scipy on fixed numbers, and the per-signal aggregation by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from inrdiag.study import compare_study as CS
from inrdiag.study.rundir import first_difference
from inrdiag.study.stats import paired, summarize, wilcoxon_p

A = [21.3, 19.8, 24.1, 22.7, 18.9, 25.0, 20.2]
B = [20.1, 19.9, 22.8, 21.0, 18.0, 23.9, 20.5]


def test_summary_matches_scipy():
    s = summarize(A)
    lo, hi = sps.t.interval(0.95, len(A) - 1, loc=sps.tmean(A), scale=sps.sem(A))
    assert s.n == 7 and s.mean == pytest.approx(sum(A) / 7)
    assert s.std == pytest.approx(sps.tstd(A)) and (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    one = summarize([3.0, math.inf])
    assert one.n == 1 and one.mean == 3.0 and one.std is None and one.ci_low is None and one.excluded == 1
    assert summarize([]).mean is None


def test_paired_matches_scipy():
    p = paired(A, B, "x", "base")
    t = sps.ttest_rel(A, B)
    w = sps.wilcoxon([a - b for a, b in zip(A, B)])
    assert p.n == 7 and p.gain.mean == pytest.approx(sum(a - b for a, b in zip(A, B)) / 7)
    assert p.t_statistic == pytest.approx(t.statistic) and p.t_p == pytest.approx(t.pvalue)
    assert p.wilcoxon_p == pytest.approx(w.pvalue)
    assert (p.wins, p.ties, p.losses) == (5, 0, 2) and p.win_rate == pytest.approx(5 / 7)


def test_wilcoxon_exact_by_hand_and_degenerate_cases():
    # Five positive differences: the signed-rank statistic W- = 0 has probability 1/32 per side.
    assert wilcoxon_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32)
    same = paired([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.t_p is None and same.wilcoxon_p is None and (same.ties, same.win_rate) == (3, 0.5)
    single = paired([2.0], [1.0])
    assert single.gain.ci_low is None and single.t_p is None and single.wins == 1


def _rec(signal, init, seed, metric, eff=10.0):
    key = f"fit-{signal}-{init}-seed{seed}"
    return key, {
        "key": key,
        "job": {"kind": "fit", "signal": {"name": signal}, "fit": {"init": init, "seed": seed}},
        "result": {"metric_name": "PSNR", "metric": metric, "heldout_metric": None,
                   "init_inlet": {"effective_rank": eff, "numerical_rank": 5}, "seconds": 1.0},
    }  # fmt: skip


def test_per_signal_aggregation_by_hand():
    # 3 signals x 2 inits x 2 seeds; per-signal value = mean over seeds.
    vals = {("a", "default"): (20, 22), ("a", "rank-expand"): (23, 23), ("b", "default"): (30, 30),
            ("b", "rank-expand"): (29, 31), ("c", "default"): (10, 14), ("c", "rank-expand"): (15, 15)}  # fmt: skip
    recs = dict(_rec(s, i, seed, v[seed]) for (s, i), v in vals.items() for seed in (0, 1))
    config = {"signals": [{"name": n} for n in "abc"], "inits": ["default", "rank-expand"], "seeds": 2,
              "first_seed": 0, "size": None, "fit": {}}  # fmt: skip
    rep = CS.from_records(config, recs)
    assert rep.per_signal == {"a": {"default": 21, "rank-expand": 23}, "b": {"default": 30, "rank-expand": 30},
                              "c": {"default": 12, "rank-expand": 15}}  # fmt: skip
    d = rep.inits_summary[0]
    assert d.over_signals.mean == pytest.approx(21) and d.over_signals.std == pytest.approx(9.0)  # 21, 30, 12
    assert d.over_runs.n == 6 and d.over_runs.mean == pytest.approx(21)
    (p,) = rep.paired
    assert p.baseline == "default" and p.gain.mean == pytest.approx(5 / 3)  # gains 2, 0, 3
    assert (p.wins, p.ties, p.losses) == (2, 1, 0)
    assert p.t_p == pytest.approx(sps.ttest_rel([23, 30, 15], [21, 30, 12]).pvalue)
    other = CS.from_records(config, recs, baseline="rank-expand")
    assert other.paired[0].gain.mean == pytest.approx(-5 / 3)
    del recs["fit-c-default-seed1"]
    with pytest.raises(Exception, match="incomplete"):
        CS.from_records(config, recs)


def test_first_difference_names_the_field():
    assert first_difference({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": [1, 3]}}) == ("b.c.1", 2, 3)
    assert first_difference({"a": 1}, {"a": 1, "z": 2}) == ("z", "<absent>", 2)
    assert first_difference({"a": [1]}, {"a": [1]}) is None
