"""The thread policy: flag > INRDIAG_THREADS > OMP_NUM_THREADS > usable CPUs less busy ones."""

from __future__ import annotations

import pytest
import torch

from inrdiag import threads
from inrdiag.errors import InrdiagError


def test_flag_and_environment_decide_first(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    assert threads.choose_threads(3, environ={}).threads == 3
    assert (
        threads.choose_threads(None, environ={"INRDIAG_THREADS": "2", "OMP_NUM_THREADS": "1"}).source
        == "INRDIAG_THREADS"
    )
    assert threads.choose_threads(None, environ={"OMP_NUM_THREADS": "1"}).threads == 1
    for bad in ("0", "x", "-2"):
        with pytest.raises(InrdiagError, match="INRDIAG_THREADS"):
            threads.choose_threads(None, environ={"INRDIAG_THREADS": bad})
    with pytest.raises(InrdiagError, match="--threads"):
        threads.choose_threads(0, environ={})


@pytest.mark.parametrize("running,expect", [(1, 4), (2, 3), (4, 1), (9, 1), (None, 4)])
def test_load_policy_counts_busy_cpus(monkeypatch, running, expect):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(threads, "runnable_tasks", lambda: running)
    choice = threads.choose_threads(None, environ={})
    assert choice.threads == expect and choice.source == "load policy"
    assert str(expect) in choice.describe()


def test_machine_readings_are_sane():
    assert 1 <= threads.usable_cpus() <= (torch.get_num_threads() + 64)
    n = threads.runnable_tasks(samples=2, interval=0.0)
    assert n is None or n >= 1  # this process is running while it reads


def test_apply_before_torch_sets_the_environment(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads.apply_before_torch(threads.ThreadChoice(1, 2, 1, "load policy"))
    import os

    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_thread_count_does_not_change_a_fit():
    """The reason the policy may vary threads with the load: same seed, same numbers, 1 or 2 threads."""
    import inrdiag.fitting.loop as fitting
    from inrdiag.fitting.targets import Target

    g = torch.Generator().manual_seed(0)
    img = torch.rand(24, 24, 1, generator=g, dtype=torch.float64).float()
    tgt = Target(kind="image", path="noise", sha256="0" * 64, shape=(24, 24), values=img.reshape(-1, 1))
    before = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            cfg = fitting.FitConfig(steps=15, depth=2, width=96, threads=n, seed=5, init="siren")
            res = fitting.fit(tgt, cfg)
            out.append((res.metric, [p.detach().clone() for p in res.model.parameters()]))
    finally:
        torch.set_num_threads(before)
    assert out[0][0] == out[1][0]
    assert all(torch.equal(a, b) for a, b in zip(out[0][1], out[1][1]))


def test_cli_policy_runs_only_in_a_fresh_process_for_computing_commands(monkeypatch):
    from inrdiag.cli import thread_policy

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("INRDIAG_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "runnable_tasks", lambda: 2)  # this process + one other busy one
    assert thread_policy(["info", "m.safetensors"], torch_loaded=False) is None
    assert thread_policy(["fit", "--help"], torch_loaded=False) is None
    assert thread_policy(["rank", "m.safetensors"], torch_loaded=True) is None  # called from Python: hands off
    choice = thread_policy(["rank", "m.safetensors"], torch_loaded=False)
    import os

    assert choice.threads == 1 and os.environ["OMP_NUM_THREADS"] == "1"


def test_bad_inrdiag_threads_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}
    env["INRDIAG_THREADS"] = "zero"
    r = subprocess.run([sys.executable, "-m", "inrdiag", "rank", str(tmp_path / "m.safetensors")],
                       capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: INRDIAG_THREADS") and len(r.stderr.splitlines()) == 1
