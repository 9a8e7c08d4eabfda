"""Issue 11: bad input gets one line and exit 2, a bug is never dressed as bad input, inputs are never destroyed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _py(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_fit_is_callable_after_its_module_is_imported():
    """Issue 11 item 0b: the function ``inrdiag.fit`` and its module have different names."""
    code = (
        "import inrdiag, inspect\n"
        "inrdiag.FitConfig\n"
        "import inrdiag.fitting\n"
        "print(inspect.isfunction(inrdiag.fit), inspect.isfunction(inrdiag.fit))"
    )
    assert _py(code).split() == ["True", "True"]
