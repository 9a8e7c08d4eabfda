"""`inrdiag rank A B ...`: one table over checkpoints, CSV rows, and pandas DataFrames."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import tiny_model
from tolerances import tol

import inrdiag
from inrdiag.errors import InrdiagError
from inrdiag.tables import RANK_COLUMNS, expand_checkpoints, rank_rows, to_dataframe


@pytest.fixture
def run_dir(tmp_path):
    """A training run's checkpoints: names that sort wrongly as text (step_1000 before step_200)."""
    d = tmp_path / "run"
    d.mkdir()
    for i, step in enumerate((200, 1000, 30)):
        inrdiag.save(_model(i), d / f"step_{step}.safetensors")
    (d / "notes.txt").write_text("not a checkpoint")
    return d


def _model(seed):
    import torch

    torch.manual_seed(seed)
    return tiny_model(activation="relu", hidden=(8, 8))


def test_folder_expands_in_natural_order(run_dir):
    names = [p.rsplit("/", 1)[1] for p in expand_checkpoints([str(run_dir)])]
    assert names == ["step_30.safetensors", "step_200.safetensors", "step_1000.safetensors"]
    with pytest.raises(InrdiagError, match="no checkpoint files"):
        empty = run_dir / "empty"
        empty.mkdir()
        expand_checkpoints([str(empty)])


def test_rows_match_the_report(run_dir):
    path = str(run_dir / "step_30.safetensors")
    rep = inrdiag.rank_report(inrdiag.load(path).model, grid=8)
    rows = rank_rows(rep, path)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["role"] for r in rows] == ["inlet", "hidden", "output head"]
    for row, layer in zip(rows, rep.layers):
        assert row["weight_stable_rank"] == layer.weight_stable_rank
        if layer.representation is None:
            assert row["effective_rank"] is None
        else:
            assert row["effective_rank"] == layer.representation.effective_rank
            assert row["numerical_rank"] == layer.representation.numerical_rank
    assert rank_rows(rep.to_dict(), path) == rows  # from the JSON just as well


def test_cli_table_json_and_csv(run_dir, tmp_path, cli):
    out = tmp_path / "ranks.csv"
    r = cli("rank", run_dir, "--grid", "8", "--csv", out)
    assert r.code == 0, r.err
    assert r.out.index("step_30") < r.out.index("step_200") < r.out.index("step_1000")
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and list(rows[0]) == list(RANK_COLUMNS)
    single = cli("rank", run_dir / "step_200.safetensors", "--grid", "8", "--json").json()
    got = [row for row in rows if row["checkpoint"].endswith("step_200.safetensors")]
    for row, layer in zip(got, single["layers"]):
        assert float(row["weight_stable_rank"]) == pytest.approx(
            layer["weight_stable_rank"], rel=tol(torch.float64).rtol
        )
    many = cli("rank", run_dir / "step_200.safetensors", run_dir / "step_30.safetensors", "--grid", "8", "--json")
    d = many.json()
    assert [c["checkpoint"].rsplit("/", 1)[1] for c in d["checkpoints"]] == [
        "step_200.safetensors",
        "step_30.safetensors",
    ]
    assert d["checkpoints"][0]["layers"] == single["layers"]
    # an existing CSV is not replaced without --force; --plot takes one checkpoint
    r = cli("rank", run_dir, "--grid", "8", "--csv", out)
    assert r.code == 2 and "exists" in r.err
    r = cli("rank", run_dir, "--grid", "8", "--plot", tmp_path / "p.png")
    assert r.code == 2 and "one checkpoint" in r.err and not (tmp_path / "p.png").exists()


def test_dataframe(run_dir):
    pd = pytest.importorskip("pandas")
    path = str(run_dir / "step_30.safetensors")
    rows = rank_rows(inrdiag.rank_report(inrdiag.load(path).model, grid=8), path)
    df = to_dataframe(rows)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(RANK_COLUMNS) and len(df) == 3


def test_dataframe_without_pandas_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pandas(name, *a, **kw):
        if name == "pandas":
            raise ImportError("no pandas")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(InrdiagError, match=r"inrdiag\[pandas\]"):
        to_dataframe([])
