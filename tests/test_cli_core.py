"""The CLI contract of info / rank / check: JSON shape, exit codes, one-line errors."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

import inrdiag

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.safetensors"
    inrdiag.save(tiny_model(dtype=torch.float32), path)
    return path


def test_help_does_not_import_torch():
    code = "import sys; from inrdiag.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
    assert "rank" in out and "check" in out


def test_cli_pins_mkl_threading_for_reproducibility():
    code = (
        "import os; os.environ.pop('MKL_DYNAMIC', None); from inrdiag.cli import main\n"
        "try:\n main(['--help'])\nexcept SystemExit: pass\nprint('MKL_DYNAMIC=' + os.environ.get('MKL_DYNAMIC', ''))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("MKL_DYNAMIC=FALSE")


def test_fast_exit_keeps_the_exit_code_the_buffered_output_and_atexit(tmp_path):
    """``leave`` (the console process's exit once torch is loaded: no interpreter teardown) still flushes
    what is buffered, runs the atexit handlers (which may print) and exits with the code; with another
    non-daemon thread alive it exits normally, so that thread finishes its work."""
    code = (
        "import atexit, sys, torch\nfrom inrdiag.cli import leave\n"
        "atexit.register(lambda: print('atexit ran'))\nsys.stdout.write('buffered, no newline')\nleave(3)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and r.stdout == "buffered, no newline" + "atexit ran\n", r
    done = tmp_path / "thread-done"
    code = (
        "import threading, time, torch\nfrom pathlib import Path\nfrom inrdiag.cli import leave\n"
        f"threading.Thread(target=lambda: (time.sleep(0.5), Path({str(done)!r}).write_text('ok'))).start()\n"
        "leave(0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and done.read_text() == "ok", r
    # no stdout at all (a closed descriptor: sys.stdout is None): the exit code still comes through
    code = "import sys, torch\nfrom inrdiag.cli import leave\nsys.stdout = None\nleave(4)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4 and r.stderr == "", r


def test_gc_is_off_until_torch_is_imported_then_on_with_the_startup_frozen(tmp_path):
    """``console_main`` of a computing command: no cyclic collection while torch is imported, then the
    collector is back with what exists frozen; also when torch's import fails, and only for torch."""
    code = (
        "import gc, sys\n"
        "import inrdiag.cli as c\n"
        "c.gc_until_torch()\n"
        "import json, fractions, importlib.util\n"  # other imports: the collector stays off
        "importlib.util.find_spec('torch')\n"  # a look-up of torch changes nothing
        "off = gc.isenabled()\n"
        "try:\n"
        "    import torch\n"
        "except ImportError as e:\n"
        "    print('failed:', e)\n"
        "print(off, gc.isenabled(), gc.get_freeze_count() > 1000, 'torch' in sys.modules)\n"
        "print(any(type(f).__name__ == '_AfterTorch' for f in sys.meta_path))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["False True True True", "False"], r.stdout
    # the collector comes back once, and later imports freeze nothing more
    again = code + "n = gc.get_freeze_count()\nimport torch.nn.functional, decimal\nprint(gc.get_freeze_count() == n)\n"
    r = subprocess.run([sys.executable, "-c", again], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "True", r
    fake = tmp_path / "torch"  # a torch whose import fails: the collector is back all the same
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('no torch here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["failed: no torch here", "False True True False", "False"], r.stdout


def test_console_main_turns_the_collector_off_only_for_computing_commands():
    code = (
        "import gc, sys\n"
        "import inrdiag.cli as c\n"
        "c.gc_until_torch = lambda: print('gc off')\n"
        "c.leave = lambda code: print('exit', code)\n"
        "c.main = lambda args: 0\n"
        "for argv in (['info', 'x'], ['ntk', 'x'], ['--help'], ['rank'], []):\n"
        "    sys.argv = ['inrdiag', *argv]\n"
        "    c.console_main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r
    assert r.stdout.split("\n")[:-1] == ["exit 0", "gc off", "exit 0", "exit 0", "gc off", "exit 0", "exit 0"]


def test_main_called_from_python_raises_a_catchable_systemexit(model_file, monkeypatch, capsys):
    """Only the console entry (``console_main``: the script and ``python -m inrdiag``) skips the teardown;
    ``main()`` from Python, torch loaded or not, ends with SystemExit, which a notebook or wrapper catches."""
    from inrdiag.cli import main

    monkeypatch.setattr(sys, "argv", ["inrdiag", "info", str(model_file)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0 and "torch" in sys.modules
    assert str(model_file.name) in capsys.readouterr().out


def test_help_lists_every_command():
    code = "from inrdiag.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for cmd in ("info", "rank", "check", "ntk", "fit", "compare", "reinit", "cohort-train", "freeze-sweep", "sae"):
        assert cmd in out, cmd


def _type_checking_imports() -> dict[str, str]:
    """name -> module (relative to inrdiag) of every import in inrdiag/__init__.py's ``if TYPE_CHECKING:`` block."""
    tree = ast.parse((ROOT / "inrdiag" / "__init__.py").read_text(encoding="utf-8"))
    blocks = [node for node in tree.body if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
              and node.test.id == "TYPE_CHECKING"]  # fmt: skip
    assert len(blocks) == 1, "inrdiag/__init__.py has one `if TYPE_CHECKING:` block"
    found: dict[str, str] = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1 and node.module, ast.dump(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: re-export it as `{alias.name} as {alias.name}`"
            assert alias.name not in found, f"{alias.name} imported twice"
            found[alias.name] = node.module
    return found


def test_type_checking_block_lists_exactly_the_lazy_exports():
    """What type checkers see (the TYPE_CHECKING imports) is what users get at run time (``_EXPORTS``)."""
    seen = _type_checking_imports()
    assert seen == inrdiag._EXPORTS, {
        "only in TYPE_CHECKING": sorted(set(seen) - set(inrdiag._EXPORTS)),
        "only in _EXPORTS": sorted(set(inrdiag._EXPORTS) - set(seen)),
        "other module": sorted(n for n in set(seen) & set(inrdiag._EXPORTS) if seen[n] != inrdiag._EXPORTS[n]),
    }
    assert sorted(inrdiag.__all__) == sorted([*inrdiag._EXPORTS, "__version__"])
    assert set(inrdiag.__all__) <= set(dir(inrdiag))


def test_import_inrdiag_stays_lazy_and_every_export_resolves():
    """``import inrdiag`` loads no torch and none of the modules it exports from; then every name resolves
    to the object of its module (a fresh interpreter, so nothing was imported before)."""
    code = (
        "import sys, importlib, inrdiag\n"
        "mods = sorted(m for m in sys.modules if m.startswith('inrdiag.'))\n"
        "print('torch' in sys.modules, mods)\n"
        "bad = [n for n, m in inrdiag._EXPORTS.items()\n"
        "       if getattr(inrdiag, n) is not getattr(importlib.import_module('inrdiag.' + m), n)]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    lazy, resolved = out.stdout.strip().splitlines()
    assert lazy == "False []", lazy
    assert resolved == "[]", resolved
    with pytest.raises(AttributeError, match="no attribute 'not_an_export'"):
        inrdiag.not_an_export  # noqa: B018


def test_load_options_need_no_torch():
    """``inrdiag.LoadOptions`` (what a file cannot tell) is made without importing torch; the loading names
    of its package still resolve, ``resolve`` to the function (not its submodule)."""
    code = (
        "import sys, inrdiag\n"
        "o = inrdiag.LoadOptions(activation='sine', w0=30.0)\n"
        "print('torch' in sys.modules, o.w0)\n"
        "from inrdiag.checkpoints import layouts\n"
        "from inrdiag.checkpoints.layouts import resolve, detect, LoadRecord\n"
        "print(callable(resolve), layouts.resolve is resolve, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "30.0", "True", "True", "True"], out.stdout
    from inrdiag.checkpoints import layouts

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        layouts.nothing  # noqa: B018


#: Exported functions whose owners have not annotated every parameter and the return yet; the test below
#: fails on any other unannotated export (a ratchet: remove a name once its function is annotated).
NOT_YET_ANNOTATED: set[str] = set()  # fmt: skip
#: Exported dataclasses still documented only by the signature dataclasses generates (same ratchet).
NOT_YET_DOCUMENTED: set[str] = set()
#: Exported values that are neither classes nor functions.
EXPORTED_VALUES = {"SCHEMES"}


@pytest.mark.parametrize("name", sorted(inrdiag._EXPORTS))
def test_each_export_is_defined_where_the_table_says(name):
    """Each export is the very object of its module, defined there (``__module__``), not re-exported from a
    third one; classes are classes and results are dataclasses with ``to_dict``; functions are documented
    Python functions whose parameters and return are annotated (the annotations are strings, some naming
    types imported for type checkers only: mypy checks that they resolve)."""
    module_name = f"inrdiag.{inrdiag._EXPORTS[name]}"
    module = importlib.import_module(module_name)
    obj = getattr(inrdiag, name)
    assert obj is getattr(module, name)
    if name in EXPORTED_VALUES:
        assert isinstance(obj, dict) and obj and all(isinstance(k, str) for k in obj)
        return
    assert inspect.isclass(obj) or inspect.isfunction(obj), f"{name} is a {type(obj).__name__}"
    assert obj.__module__ == module_name, f"{name} is defined in {obj.__module__}, exported from {module_name}"
    assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
    if inspect.isclass(obj):
        if name not in NOT_YET_DOCUMENTED:
            assert not obj.__doc__.startswith(f"{name}("), f"{name}: only the generated dataclass docstring"
        if name.endswith(("Report", "Result", "Study")):
            assert dataclasses.is_dataclass(obj) and callable(getattr(obj, "to_dict", None)), name
        return
    sig = inspect.signature(obj)
    missing = [p.name for p in sig.parameters.values() if p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    if name not in NOT_YET_ANNOTATED:
        assert not missing, f"{name}: not annotated: {missing}"


def test_rank_json_contract(cli, model_file):
    r = cli("rank", model_file, "--grid", "12", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["grid"] == {"shape": [12, 12], "points": 144}
    layers = data["layers"]
    assert [layer["index"] for layer in layers] == [0, 1, 2, 3]
    for layer in layers[:-1]:
        rep = layer["representation"]
        assert set(rep) >= {"numerical_rank", "effective_rank", "stable_rank", "singular_values", "dead_units"}
        assert len(rep["singular_values"]) == layer["out_features"]
    assert layers[-1]["representation"] is None
    assert layers[0]["in_features"] == 2 and layers[-1]["out_features"] == 1
    srs = [layer["weight_stable_rank"] for layer in layers[:-1]]
    assert data["recommended_freeze_depth"] == 1 + srs.index(max(srs))


def test_rank_table_and_plot(cli, model_file, tmp_path):
    plot = tmp_path / "decay.png"
    r = cli("rank", model_file, "--grid", "10", "--plot", plot)
    assert r.code == 0, r.err
    assert "recommended freeze depth" in r.out and "inlet" in r.out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("rank", model_file, "--grid", "10", "--plot", plot)
    assert r.code == 2 and "--force" in r.err
    assert cli("rank", model_file, "--grid", "10", "--plot", plot, "--force").code == 0


def test_info_lists_everything(cli, model_file):
    r = cli("info", model_file)
    assert r.code == 0
    assert "safetensors (inrdiag metadata)" in r.out and "parameters" in r.out
    data = cli("info", model_file, "--json").json()
    assert data["parameters"] == sum(p.numel() for p in tiny_model().parameters())
    assert [layer["out_features"] for layer in data["layers"]] == [16, 16, 16, 1]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing": lambda tmp, good: tmp / "nope.safetensors",
    "empty": lambda tmp, good: write(tmp / "e.safetensors", b""),
    "truncated": lambda tmp, good: write(tmp / "t.safetensors", good.read_bytes()[:300]),
    "garbage": lambda tmp, good: write(tmp / "g.pt", b"hello world, not a checkpoint"),
    # An empty folder: `rank` takes folders of checkpoints (tests/test_tables.py), but not an empty one.
    "folder": lambda tmp, good: _mkdir(tmp / "empty"),
    "truncated-pt": lambda tmp, good: _truncated_pt(tmp),
}


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _truncated_pt(tmp):
    torch.save(tiny_model().state_dict(), tmp / "full.pt")
    return write(tmp / "cut.pt", (tmp / "full.pt").read_bytes()[:500])


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_files_one_line_error(cli, model_file, tmp_path, case):
    path = BAD_INPUTS[case](tmp_path, model_file)
    for cmd in ("info", "rank", "check"):
        r = cli(cmd, path)
        assert r.code == 2, (cmd, r.out, r.err)
        assert r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1, r.err
        assert "Traceback" not in r.err


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_that_is_not_a_state_dict(cli, tmp_path):
    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    r = cli("info", tmp_path / "evil.pt")
    assert r.code == 2 and "not a plain state dict" in r.err


@pytest.mark.parametrize("sd,msg", [
    ({"a": torch.zeros(3)}, "no 2-D weight"),
    ({"0.weight": torch.zeros(8, 2), "1.weight": torch.zeros(1, 5)}, "do not chain"),
    ({"0.weight": torch.zeros(8, 2)}, "only one 2-D weight"),
    ({"0.weight": torch.zeros(8, 40), "1.weight": torch.zeros(1, 8)}, "--encoding positional"),
])  # fmt: skip
def test_bad_state_dicts(cli, tmp_path, sd, msg):
    torch.save(sd, tmp_path / "x.pt")
    r = cli("info", tmp_path / "x.pt", "--activation", "relu")
    assert r.code == 2 and msg in r.err, r.err


@pytest.mark.parametrize("args,msg", [
    (["--activation", "swish"], "unknown --activation"),
    (["--encoding", "hash"], "unknown --encoding"),
    (["--grid", "1"], "--grid"),
    (["--device", "tpu"], "unknown --device"),
    (["--tol", "2"], "--tol"),
    (["--grid", "abc"], "'--grid'"),
    (["--no-such-flag"], "no-such-flag"),
])  # fmt: skip
def test_bad_flag_values(cli, model_file, args, msg):
    r = cli("rank", model_file, *args)
    assert r.code == 2 and msg in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_grid_too_large_refused_with_estimate(cli, model_file):
    r = cli("rank", model_file, "--grid", "2000000")
    assert r.code == 2 and "GiB" in r.err and "--grid" in r.err


def test_check_pass_fail_and_policy_file(cli, model_file, tmp_path):
    r = cli(
        "check", model_file, "--grid", "16", "--min-inlet-effective-rank-fraction", "0.01", "--max-dead-fraction", "1"
    )
    assert r.code == 0, r.out + r.err
    assert "PASS" in r.out and "FAIL" not in r.out
    r = cli("check", model_file, "--grid", "16", "--min-inlet-effective-rank-fraction", "0.99")
    assert r.code == 1 and "FAIL" in r.out
    policy = tmp_path / "pyproject.toml"
    policy.write_text("[tool.inrdiag.check]\nmin-inlet-effective-rank-fraction = 0.99\ngrid = 16\n")
    r = cli("check", model_file, "--policy", policy, "--json")
    assert r.code == 1
    data = r.json()
    assert data["passed"] is False and data["policy"]["grid"] == 16
    failed = [c for c in data["checks"] if c["passed"] is False]
    assert [c["name"] for c in failed] == ["inlet effective-rank fraction"]
    # Flags override the file.
    assert cli("check", model_file, "--policy", policy, "--min-inlet-effective-rank-fraction", "0").code == 0
    jpol = tmp_path / "p.json"
    jpol.write_text('{"min_weight_stable_rank": 1000}')
    assert cli("check", model_file, "--policy", jpol, "--grid", "8").code == 1
    jpol.write_text('{"min_rank": 1}')
    r = cli("check", model_file, "--policy", jpol)
    assert r.code == 2 and "unknown keys" in r.err


def test_check_fails_on_nonfinite_weights(cli, tmp_path):
    model = tiny_model(dtype=torch.float32)
    with torch.no_grad():
        model.linears[1].weight[0, 0] = float("nan")
    inrdiag.save(model, tmp_path / "nan.safetensors")
    r = cli("check", tmp_path / "nan.safetensors", "--min-weight-stable-rank", "1")
    assert r.code == 1 and "linears.1.weight" in r.out
    assert cli("info", tmp_path / "nan.safetensors").code == 0
    r = cli("rank", tmp_path / "nan.safetensors")
    assert r.code == 2 and "not finite" in r.err


def test_examples_script_reproduces_shipped_checkpoints(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_checkpoints.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    for name in ("relu_4x256", "siren_3x64"):
        made = inrdiag.load(tmp_path / f"{name}.safetensors")
        shipped = inrdiag.load(ROOT / "examples" / "checkpoints" / f"{name}.safetensors")
        assert made.spec == shipped.spec
        for a, b in zip(made.model.state_dict().values(), shipped.model.state_dict().values()):
            assert torch.equal(a, b)
