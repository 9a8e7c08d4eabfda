"""Shared fixtures: every test is seeded, offline, and runs the CLI in-process."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from inrdiag import ArchSpec, CoordMLP
from inrdiag.cli import main


@pytest.fixture(autouse=True)
def _seed_everything(monkeypatch):
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    monkeypatch.setenv("COLUMNS", "200")  # wide, wrap-free rich tables
    monkeypatch.setenv("NO_COLOR", "1")


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run ``inrdiag ARGS`` in-process; returns exit code, stdout, stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def tiny_model(activation="relu", hidden=(16, 16, 16), in_features=2, out_features=1, dtype=torch.float64, **kw):
    spec = ArchSpec(
        in_features=in_features, out_features=out_features, hidden=list(hidden), activation=activation, **kw
    )
    model = CoordMLP(spec).to(dtype)
    if spec.encoding == "fourier":
        with torch.no_grad():
            model.encoding.B.normal_(0, 2.0)
    for norm in model.norms.values():  # non-trivial running statistics
        with torch.no_grad():
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.1, 0.1)
    return model.eval()
