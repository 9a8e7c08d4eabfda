"""Fuzzing the CLI with hypothesis (issue 11): mutated safetensors headers and bytes, mutated inrdiag metadata,
mutated policy files, random option values.

Every run, whatever the input: exit 0, 1 (a failed `check` threshold) or 2 (bad input), never 70 (an internal
error, i.e. a bug) nor a traceback; exit 2 prints exactly one line ``error: ...`` on stderr; Python warnings
reach stderr as a user would see them (outside pytest's capture) and count as lines; the inputs are
byte-identical afterwards; nothing is written but the declared outputs, all inside the test's temp folder
(no stray temp file). Deterministic (``derandomize=True``) so CI sees the same examples every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import tiny_model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import inrdiag
from inrdiag.cli import main

ROOT = Path(__file__).resolve().parents[1]
#: Deterministic in CI; ``INRDIAG_FUZZ_RANDOM=1`` draws new examples each run (a local hunt).
SETTINGS = dict(deadline=None, derandomize=os.environ.get("INRDIAG_FUZZ_RANDOM") != "1",
                suppress_health_check=list(HealthCheck), database=None)  # fmt: skip


def _examples(n: int) -> int:
    """``INRDIAG_FUZZ_SCALE=10`` runs ten times the examples (a longer local hunt); CI uses 1."""
    return int(n * float(os.environ.get("INRDIAG_FUZZ_SCALE", "1")))


# ---------------------------------------------------------------- fixtures shared by every example
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A temp folder with the inputs every example starts from, and the working folder the CLI runs in."""
    d = tmp_path_factory.mktemp("fuzz")
    model = d / "m.safetensors"
    inrdiag.save(tiny_model(hidden=(6, 6), dtype=torch.float32), model, {"init": "default", "seed": 0})
    img = d / "img.png"
    iio.imwrite(img, np.random.default_rng(0).integers(0, 256, size=(6, 6, 3)).astype(np.uint8))
    (d / "run").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is several times faster on a busy 2-core machine
    yield d
    torch.set_num_threads(threads)


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}  # fmt: skip


def run_cli(work: Path, args: list[str], inputs: list[Path], outputs: tuple[str, ...] = ()) -> Run:
    """Run ``inrdiag ARGS`` in-process in ``work/run`` and assert the fuzz contract."""
    run_dir = work / "run"
    for p in run_dir.iterdir():  # a fresh working folder for every example
        p.unlink() if p.is_file() or p.is_symlink() else shutil.rmtree(p)
    before = {p: p.read_bytes() for p in inputs}
    outside = _digest(work), sorted(os.listdir(ROOT))
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(
                warnings.formatwarning(m, c, f, n, line)
            )
            code = main([str(a) for a in args])
    finally:
        os.chdir(cwd)
    r = Run(code, out.getvalue(), err.getvalue())
    shown = f"inrdiag {' '.join(map(str, args))}\nexit {r.code}\nstderr: {r.err!r}"
    assert r.code in (0, 1, 2), shown
    if r.code == 2:
        assert r.err.startswith("error: ") and r.err.count("\n") == 1 and r.err.endswith("\n"), shown
    elif r.code == 1:
        assert args[0] == "check" and r.err == "", shown
    else:
        assert "error:" not in r.err and "Traceback" not in r.err, shown
    for p, data in before.items():
        assert p.read_bytes() == data, f"input {p} changed\n{shown}"
    written = sorted(os.listdir(run_dir))
    assert set(written) <= set(outputs), f"unexpected files {written}\n{shown}"
    assert sorted(os.listdir(ROOT)) == outside[1], f"files written in the repository\n{shown}"
    assert {k: v for k, v in _digest(work).items() if not k.startswith("run")} == {
        k: v for k, v in outside[0].items() if not k.startswith("run")
    }, f"files changed outside the working folder\n{shown}"
    return r


# ---------------------------------------------------------------- safetensors files
def _split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=6), st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "I8", "BOOL", "U8", "F8_E4M3", "C64",
                                          "relu", "sine", "none", "fourier", "positional", "1e12", "NaN"]),
)  # fmt: skip
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)  # fmt: skip


def _paths(obj, prefix=()):
    """Every (path, value) in a JSON-like value, the root included."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _set(obj, path, value, delete=False):
    if not path:
        return value
    node = obj
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


@st.composite
def json_mutation(draw, doc):
    """``doc`` with 1-3 leaves or subtrees replaced, deleted or extended (never the root replaced)."""
    import copy

    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete":
            doc = _set(doc, path, None, delete=True)
        elif action == "add":
            parent = doc if len(path) == 1 else _walk(doc, path[:-1])
            if isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(JSON_VALUE)
            elif isinstance(parent, list):
                parent.append(draw(JSON_VALUE))
        else:
            doc = _set(doc, path, draw(JSON_VALUE))
    return doc


def _walk(doc, path):
    for k in path:
        doc = doc[k]
    return doc


#: Fields of the inrdiag metadata that a file (or a careless script) may get wrong, as (path) in the JSON.
META_FIELDS = [
    ("arch", f)
    for f in (
        "hidden",
        "in_features",
        "out_features",
        "activation",
        "w0",
        "w0_hidden",
        "encoding",
        "fourier_features",
        "frequencies",
        "include_input",
        "batchnorm",
        "bias",
    )
]
META_FIELDS += [("arch", "hidden", 0), ("arch", "hidden", 1), ("arch",), ("format",), ("provenance",),
                ("provenance", "init"), ("provenance", "seed")]  # fmt: skip


@st.composite
def field_mutation(draw, doc):
    """``doc`` with one named field (``META_FIELDS``) set to a random JSON value or deleted."""
    import copy

    doc = copy.deepcopy(doc)
    path = draw(st.sampled_from(META_FIELDS))
    if draw(st.integers(0, 5)) == 0:
        try:
            return _set(doc, path, None, delete=True)
        except (KeyError, IndexError, TypeError):
            return doc
    value = draw(st.one_of(JSON_VALUE, st.integers(10**9, 10**13), st.floats(0.5, 64.5), st.just("6")))
    try:
        return _set(doc, path, value)
    except (KeyError, IndexError, TypeError):
        return doc


@st.composite
def mutated_safetensors(draw, base: bytes):
    header, body = _split(base)
    kind = draw(st.sampled_from(["bytes", "truncate", "header", "header", "metadata", "field", "field"]))
    if kind == "bytes":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return kind, bytes(data)
    if kind == "truncate":
        return kind, base[: draw(st.integers(0, len(base) - 1))]
    if kind == "header":
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        mutated = draw(json_mutation(tensors))
        return kind, _join({"__metadata__": header["__metadata__"], **mutated}, body)
    meta = json.loads(header["__metadata__"]["inrdiag"])
    mutated = draw(json_mutation(meta) if kind == "metadata" else field_mutation(meta))
    return kind, _join({**header, "__metadata__": {"inrdiag": json.dumps(mutated)}}, body)


# Open bugs of the checkpoint loader (layouts.py / spec.py / model.py, hardened on another branch at the time of
# writing): metadata of these shapes ends in an internal error (exit 70). Examples matching them are skipped with
# ``assume`` so this branch is green; the assertion itself is unchanged. RE-WIDEN after the loader branch is
# merged by emptying this list (each entry: a reproducer in the hardening report of issue 11).
INT_FIELDS = ("in_features", "out_features", "fourier_features", "frequencies")


def _bad_number(v) -> bool:
    return isinstance(v, bool) or not isinstance(v, (int, float)) or not (-(10**6) < v < 10**6)


def _bad_int(v) -> bool:
    return _bad_number(v) or (isinstance(v, float) and not v.is_integer())


#: Loader failures the fuzz run found before the loader's metadata schema check landed (provenance not an
#: object, arch numbers of the wrong type or huge, hidden not a list of sane widths): all fixed, so the
#: list is empty and every mutated checkpoint is checked. Add (name, predicate on the metadata) here only
#: for a bug that is being fixed elsewhere, and say so.
OPEN_LOADER_BUGS: list = []


def _known_loader_bug(blob: bytes) -> str | None:
    try:
        header, _ = _split(blob)
        meta = json.loads(header["__metadata__"]["inrdiag"])
    except Exception:  # noqa: BLE001 - not parseable: not one of the known metadata bugs
        return None
    if not isinstance(meta, dict):
        return None
    return next((name for name, hit in OPEN_LOADER_BUGS if hit(meta)), None)


def _base_model(work: Path) -> bytes:
    return (work / "m.safetensors").read_bytes()


@settings(max_examples=_examples(500), **SETTINGS)
@given(data=st.data())
def test_fuzz_checkpoints(work, data):
    """Mutated safetensors bytes, tensor headers and inrdiag metadata through info / rank / check / reinit."""
    kind, blob = data.draw(mutated_safetensors(_base_model(work)), label="mutation")
    assume(_known_loader_bug(blob) is None)
    model = work / "fz.safetensors"
    model.write_bytes(blob)
    command = data.draw(st.sampled_from(["info", "info", "rank", "check", "reinit"]), label="command")
    args = {"info": ["info", model, "--json"], "rank": ["rank", model, "--grid", "4", "--json"],
            "check": ["check", model, "--grid", "4", "--min-weight-stable-rank", "0.5", "--json"],
            "reinit": ["reinit", model, "--scheme", "default", "-o", "out.safetensors"]}[command]  # fmt: skip
    run_cli(work, args, [model], ("out.safetensors",))


# ---------------------------------------------------------------- policy files
POLICY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-5, 40), st.floats(allow_nan=True, width=32),
                         st.text(max_size=5), st.lists(st.integers(0, 3), max_size=2),
                         st.dictionaries(st.sampled_from(["a", "grid"]), st.integers(0, 3), max_size=2))  # fmt: skip


def _policy_keys():
    from inrdiag.checks import POLICY_KEYS

    return [*POLICY_KEYS, *(k.replace("_", "-") for k in POLICY_KEYS), "unknown_key", "tool", "check"]


def _toml_value(v) -> str:
    if v is None:
        return '"none"'  # TOML has no null
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else ("-inf" if v == -float("inf") else repr(v)))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


@settings(max_examples=_examples(250), **SETTINGS)
@given(data=st.data())
def test_fuzz_policy_files(work, data):
    keys = _policy_keys()
    table = data.draw(st.dictionaries(st.sampled_from(keys), POLICY_VALUE, max_size=4), label="table")
    form = data.draw(st.sampled_from(["pyproject", "check-table", "flat-json", "json-check", "raw"]), label="form")
    if form == "pyproject":
        name, text = (
            "pyproject.toml",
            "[tool.inrdiag.check]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items()),
        )
    elif form == "check-table":
        name, text = "policy.toml", "[check]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())
    elif form == "flat-json":
        name, text = "policy.json", json.dumps(table)
    elif form == "json-check":
        name, text = "policy.json", json.dumps({"tool": {"inrdiag": {"check": table}}} if table else {"check": 3})
    else:
        name = data.draw(st.sampled_from(["pyproject.toml", "policy.json"]), label="raw-name")
        text = data.draw(st.text(max_size=60), label="raw-text")  # fmt: skip
    policy = work / name
    policy.write_text(text, encoding="utf-8", errors="surrogatepass")
    flags = data.draw(st.lists(st.sampled_from([["--tol", "0"], ["--tol", "1e-3"], ["--max-dead-fraction", "2"],
                                                ["--min-weight-stable-rank", "0.1"], ["--allow-nonfinite"]]),
                               max_size=2), label="flags")  # fmt: skip
    args = ["check", work / "m.safetensors", "--policy", policy, "--grid", "4", *[a for f in flags for a in f]]
    run_cli(work, args, [policy, work / "m.safetensors"])


# ---------------------------------------------------------------- random option values
TOKENS = ["0", "1", "2", "3", "-1", "2.5", "abc", "", "nan", "inf", "-inf", "1e-12", "1e309", "4294967296",
          "18446744073709551616", "1000000000", "0x10", " 3"]  # fmt: skip
SMALL = ["0", "1", "2", "-1", "2.5", "abc", "", "nan", "1000000000", "18446744073709551616"]


def _opts(draw, table: dict[str, list[str]]) -> list[str]:
    names = draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=4, unique=True))
    out: list[str] = []
    for n in names:
        out += [n, draw(st.sampled_from(table[n]))]
    return out


COMMANDS = {
    "rank": ({"--grid": ["2", "3", "4", "-3", "1", "2.5", "abc", "100000", "18446744073709551616"],
              "--tol": TOKENS, "--device": ["cpu", "auto", "gpu", "cuda:x", ""]}, ["--grid", "4"]),
    "ntk": ({"--grid": ["2", "3", "4", "0", "-2", "2.5", "abc", "100000"], "--points": ["1", "2", "5", "0", "-1", "abc", "1000000000"],
             "--top-k": ["1", "3", "0", "-1", "abc", "1000000000"], "--method": ["auto", "exact", "lanczos", "magic", ""],
             "--dtype": ["float64", "float32", "float16", "int8", ""], "--tol": TOKENS, "--seed": SMALL,
             "--lr": TOKENS, "--fit-steps": ["0", "1", "2", "-1", "abc"]}, ["--grid", "4"]),
    "fit": ({"--steps": ["1", "2", "0", "-1", "abc", "2.5"], "--width": SMALL, "--depth": SMALL, "--lr": TOKENS,
             "--batch-size": SMALL, "--holdout-stride": SMALL, "--size": ["2", "3", "5", "1", "0", "-1", "abc", "100000"],
             "--seed": SMALL, "--init": ["default", "rank-expand", "siren", "pe", "ff", "bn", "xavier", ""],
             "--track-rank": ["0", "1", "-1", "abc"], "--threads": ["1", "0", "-1", "abc"]}, ["--steps", "2", "--width", "8", "--depth", "1"]),
    "reinit": ({"--scheme": ["default", "rank-expand", "siren", "pe", "bn", "x", ""], "--seed": SMALL}, []),
}  # fmt: skip


@settings(max_examples=_examples(300), **SETTINGS)
@given(data=st.data())
def test_fuzz_option_values(work, data):
    command = data.draw(st.sampled_from(sorted(COMMANDS)), label="command")
    table, defaults = COMMANDS[command]
    opts = data.draw(st.composite(lambda draw: _opts(draw, table))(), label="options")
    if command == "fit":
        given_names = set(opts[::2])
        safe = [a for i in range(0, len(defaults), 2) if defaults[i] not in given_names for a in defaults[i : i + 2]]
        args = ["fit", work / "img.png", "--device", "cpu", *safe, *opts, "-o", "fit.safetensors", "--recon", "r.png"]
        outputs = ("fit.safetensors", "r.png")
    elif command == "reinit":
        args = ["reinit", work / "m.safetensors", *opts, "-o", "re.safetensors"]
        outputs = ("re.safetensors",)
    else:
        given_names = set(opts[::2])
        safe = [a for i in range(0, len(defaults), 2) if defaults[i] not in given_names for a in defaults[i : i + 2]]
        target = ["--target", work / "img.png"] if command == "ntk" and data.draw(st.booleans(), label="target") else []
        args = [command, work / "m.safetensors", *safe, *opts, *target, "--json"]
        outputs = ()
    run_cli(work, args, [work / "m.safetensors", work / "img.png"], outputs)
