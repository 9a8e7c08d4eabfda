"""Issue 11, loader side: every bad input is one line (an InrdiagError subclass), never a shorter
network, a silent cast or an internal error."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import save_file
from tolerances import assert_close

import inrdiag
from inrdiag import ArchSpec, CoordMLP
from inrdiag.errors import AmbiguousArchitectureError, CheckpointError, InrdiagError, ResourceError, SpecError


def one_line_error(r, *words):
    assert r.code == 2, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], r.err
    for w in words:
        assert w in lines[0], (w, lines[0])


def plain_state(model=None):
    model = model or tiny_model(dtype=torch.float32)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


FLAGS = ["--activation", "relu", "--out-activation", "none"]


# ------------------------------------------------------------------ a damaged or missing middle layer
@pytest.mark.parametrize("damage", ["missing", "3-D"])
def test_gap_in_numbered_chain_is_an_error(tmp_path, cli, damage):
    sd = plain_state()
    del sd["linears.1.weight"], sd["linears.1.bias"]
    if damage == "3-D":
        sd["linears.1.weight"] = torch.zeros(16, 16, 2)
        sd["linears.1.bias"] = torch.zeros(16)
    save_file(sd, str(tmp_path / "gap.safetensors"))
    with pytest.raises(CheckpointError, match="linears.1"):
        inrdiag.load(tmp_path / "gap.safetensors", activation="relu", out_activation="none")
    one_line_error(cli("check", tmp_path / "gap.safetensors", *FLAGS, "--min-weight-stable-rank", "1"), "linears.1")


def test_unused_matrix_is_accounted_for(tmp_path, cli):
    sd = plain_state()
    sd["extra.embedding"] = torch.zeros(10, 16)
    save_file(sd, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="extra.embedding.*--model-code"):
        inrdiag.load(tmp_path / "x.safetensors", activation="relu", out_activation="none")
    sd = plain_state()
    sd["linears.1.omega"] = torch.ones(1)  # a parameter inside a chain layer's module
    save_file(sd, str(tmp_path / "y.safetensors"))
    one_line_error(cli("info", tmp_path / "y.safetensors", *FLAGS), "linears.1.omega")


# ------------------------------------------------------------------ metadata schema
def write_meta(path, arch=None, tensors=None, **top):
    model = tiny_model(dtype=torch.float32)
    meta = {"format": 1, "arch": model.spec.to_dict() if arch is None else arch, **top}
    save_file(tensors or plain_state(model), str(path), metadata={"inrdiag": json.dumps(meta)})


BASE = tiny_model(dtype=torch.float32).spec.to_dict()
BAD_ARCH = [
    ({"hidden": ["a", "b", "c"]}, "hidden[0] must be an integer"),
    ({"hidden": [4.7, 16, 16]}, "hidden[0] must be an integer"),
    ({"hidden": [16.0, 16, 16]}, "hidden[0] must be an integer"),
    ({"hidden": "16"}, "hidden must be a list"),
    ({"hidden": {"a": 1}}, "hidden must be a list"),
    ({"in_features": 2.0}, "in_features must be an integer"),
    ({"bias": "no"}, "bias must be true or false"),
    ({"w0": "x"}, "w0 must be a number"),
    ({"w0": True}, "w0 must be a number"),
    ({"activation": 3}, "activation 3 is not allowed"),
    ({"batchnorm": [7]}, "batchnorm[0] must be in 0..2"),
    ({"hidden": [10**12, 16, 16]}, "hidden[0] must be in 1..1048576"),
    ({"out_activation": "swish"}, "out_activation 'swish' is not allowed"),
]


@pytest.mark.parametrize("change,msg", BAD_ARCH)
def test_arch_metadata_schema(tmp_path, cli, change, msg):
    write_meta(tmp_path / "m.safetensors", {**BASE, **change})
    with pytest.raises(CheckpointError, match="metadata field arch"):
        inrdiag.load(tmp_path / "m.safetensors")
    one_line_error(cli("info", tmp_path / "m.safetensors"), msg)


def test_arch_metadata_required_fields(tmp_path, cli):
    arch = dict(BASE)
    del arch["hidden"]
    write_meta(tmp_path / "m.safetensors", arch)
    one_line_error(cli("info", tmp_path / "m.safetensors"), "lacks required fields ['hidden']")
    write_meta(tmp_path / "n.safetensors", "not an object")
    one_line_error(cli("info", tmp_path / "n.safetensors"), "must be a JSON object")


@pytest.mark.parametrize("top,msg", [
    ({"provenance": [1, 2]}, "provenance must be a JSON object"),
    ({"provenance": "abc"}, "provenance must be a JSON object"),
    ({"format": "1"}, "format '1' is not supported"),
    ({"cohort": {"heads": 2}}, "lacks the required field 'shared_layers'"),
    ({"cohort": {"heads": 2, "shared_layers": "2"}}, "cohort.shared_layers must be an integer in 1..3"),
    ({"cohort": {"heads": 2, "shared_layers": 9}}, "cohort.shared_layers must be an integer in 1..3"),
    ({"cohort": {"heads": 2.5, "shared_layers": 2}}, "cohort.heads must be an integer"),
    ({"cohort": {"heads": 2, "shared_layers": 2, "names": "ab"}}, "cohort.names must be a list of 2 strings"),
    ({"cohort": [1]}, "cohort must be a JSON object"),
])  # fmt: skip
def test_top_level_metadata_schema(tmp_path, cli, top, msg):
    write_meta(tmp_path / "m.safetensors", **top)
    one_line_error(cli("info", tmp_path / "m.safetensors"), msg)


def test_cohort_loader_sees_validated_metadata(tmp_path):
    from inrdiag.cohort.train import load_cohort

    write_meta(tmp_path / "m.safetensors", cohort={"heads": 2, "shared_layers": 7})
    with pytest.raises(CheckpointError, match="shared_layers"):
        load_cohort(tmp_path / "m.safetensors")


def test_huge_declared_width_refused_before_allocation(tmp_path, cli):
    arch = {**BASE, "hidden": [1 << 20] * 3000}
    write_meta(tmp_path / "huge.safetensors", arch)
    t0 = time.perf_counter()
    r = cli("info", tmp_path / "huge.safetensors")
    assert time.perf_counter() - t0 < 10
    one_line_error(r, "GiB")
    with pytest.raises(ResourceError):
        CoordMLP(ArchSpec(2, 1, [1 << 20] * 3000))


# ------------------------------------------------------------------ damaged torch files
def test_deeply_nested_pt(tmp_path, cli):
    obj: dict = {"w": torch.zeros(2, 2)}
    for _ in range(200):
        obj = {"x": obj}
    torch.save(obj, tmp_path / "deep.pt")
    with pytest.raises(CheckpointError, match="nested"):
        inrdiag.load(tmp_path / "deep.pt")
    one_line_error(cli("info", tmp_path / "deep.pt"), "nested")


def test_random_bytes_pt_is_one_line(tmp_path, cli):
    (tmp_path / "r.pt").write_bytes(b"PK\x03\x04" + os.urandom(4000))
    r = cli("info", tmp_path / "r.pt")
    one_line_error(r)
    (tmp_path / "p.pt").write_bytes(b"\x80\x02" + os.urandom(4000))
    one_line_error(cli("info", tmp_path / "p.pt"))


# ------------------------------------------------------------------ dtype policy
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_floating_dtypes_load_and_say_so(tmp_path, dtype):
    model = tiny_model(dtype=torch.float32)
    save_file({k: v.to(dtype) for k, v in plain_state(model).items()}, str(tmp_path / "h.safetensors"))
    loaded = inrdiag.load(tmp_path / "h.safetensors", activation="relu", out_activation="none")
    want = torch.float64 if dtype == torch.float64 else torch.float32
    assert loaded.model.linears[0].weight.dtype == want
    if dtype != torch.float64:
        assert any("converted to float32" in n for n in loaded.notes)


@pytest.mark.parametrize("dtype,msg", [(torch.int8, "integer/bool"), (torch.int64, "integer/bool"),
                                       (torch.bool, "integer/bool"), (torch.float8_e4m3fn, "float8"),
                                       (torch.complex64, "complex")])  # fmt: skip
def test_other_dtypes_refused(tmp_path, cli, dtype, msg):
    sd = plain_state()
    sd["linears.0.weight"] = sd["linears.0.weight"].to(dtype)
    torch.save(sd, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match=msg):
        inrdiag.load(tmp_path / "d.pt", activation="relu", out_activation="none")
    one_line_error(cli("info", tmp_path / "d.pt", *FLAGS), msg)
    if dtype == torch.complex64:
        assert "--model-code" in cli("info", tmp_path / "d.pt", *FLAGS).err


# ------------------------------------------------------------------ info defects (issue 10, point 7)
def test_info_wrapper_prefix_not_listed_unused(tmp_path):
    """A top-level 'model.' that is just a module name: nothing is 'outside' it."""
    from inrdiag.checkpoints.read import read_checkpoint

    sd = {"model.0.weight": torch.zeros(8, 2), "model.2.weight": torch.zeros(1, 8), "head.weight": torch.zeros(3, 3)}
    torch.save(sd, tmp_path / "m.pt")
    raw = read_checkpoint(tmp_path / "m.pt")
    assert raw.wrapper == "" and not raw.skipped


def test_info_skipped_rows_keep_dtype_column(tmp_path, cli):
    sd = {"state_dict": plain_state(), "epoch": 3}
    torch.save(sd, tmp_path / "l.ckpt")
    loaded = inrdiag.load(tmp_path / "l.ckpt", activation="relu", out_activation="none")
    row = next(t for t in loaded.tensors if t.key == "epoch")
    assert row.dtype == "-" and row.role == "skipped: int"


def test_info_table_of_many_tensors_is_capped(tmp_path, cli):
    sd = plain_state()
    extra = {f"stats.{i}": torch.zeros(1) for i in range(5000)}
    torch.save({**sd, **extra}, tmp_path / "many.pt")
    t0 = time.perf_counter()
    r = cli("info", tmp_path / "many.pt", *FLAGS)
    assert r.code == 0 and time.perf_counter() - t0 < 30
    assert "more entries" in r.out and len(r.out.splitlines()) < 300
    assert len(cli("info", tmp_path / "many.pt", *FLAGS, "--json").json()["tensors"]) == len(sd) + 5000


# ------------------------------------------------------------------ the Python API
@pytest.mark.parametrize("call,exc,msg", [
    (lambda p: inrdiag.save(None, p), InrdiagError, "save\\(\\) needs a CoordMLP, got NoneType"),
    (lambda p: inrdiag.save(tiny_model(), p, provenance={"x": float("nan")}), InrdiagError, "plain JSON"),
    (lambda p: inrdiag.save(tiny_model(), p, provenance={"x": {1, 2}}), InrdiagError, "plain JSON"),
    (lambda p: inrdiag.save(tiny_model(), p, provenance=[1]), InrdiagError, "provenance must be a dict"),
    (lambda p: ArchSpec(2, 1, ["a"]), SpecError, "hidden\\[0\\] must be an integer, got 'a'"),
    (lambda p: ArchSpec(2, 1, [4.7]), SpecError, "hidden\\[0\\] must be an integer, got 4.7"),
    (lambda p: ArchSpec(2, 1, [8], bias="no"), SpecError, "bias must be true or false"),
    (lambda p: CoordMLP({"in_features": 2}), SpecError, "CoordMLP needs an ArchSpec, got dict"),
    (lambda p: inrdiag.load(None), InrdiagError, "needs a file path"),
    (lambda p: inrdiag.LoadOptions(w0="a"), SpecError, "--w0 must be a finite number"),
    (lambda p: inrdiag.LoadOptions(frequencies=2.5), SpecError, "--frequencies must be an integer"),
    (lambda p: inrdiag.load(p, colour="red"), SpecError, "unknown load flags \\['colour'\\]"),
])  # fmt: skip
def test_python_api_raises_own_errors(tmp_path, call, exc, msg):
    with pytest.raises(exc, match=msg):
        call(tmp_path / "x.safetensors")


def test_save_of_loaded_object_hints(tmp_path):
    inrdiag.save(tiny_model(), tmp_path / "a.safetensors")
    loaded = inrdiag.load(tmp_path / "a.safetensors")
    with pytest.raises(InrdiagError, match="pass loaded.model"):
        inrdiag.save(loaded, tmp_path / "b.safetensors")


# ------------------------------------------------------------------ old files load as before
@pytest.mark.parametrize("enc", [dict(encoding="positional", frequencies=3, include_input=True),
                                 dict(encoding="positional", frequencies=2, include_input=False),
                                 dict(encoding="fourier", fourier_features=4)])  # fmt: skip
def test_old_metadata_without_new_fields(tmp_path, enc):
    """Files written before pe_convention/out_activation existed: the same function as then."""
    import math

    model = tiny_model(dtype=torch.float32, **enc)
    arch = {k: v for k, v in model.spec.to_dict().items()
            if k not in ("out_activation", "pe_convention", "pe_min_exp", "pe_max_exp", "ff_convention",
                         "ff_include_input")}  # fmt: skip
    write_meta(tmp_path / "old.safetensors", arch, plain_state(model))
    loaded = inrdiag.load(tmp_path / "old.safetensors")
    x = torch.rand(20, 2) * 2 - 1
    if enc["encoding"] == "fourier":
        B = model.encoding.B
        g = torch.cat([torch.sin(2 * math.pi * x @ B.T), torch.cos(2 * math.pi * x @ B.T)], -1)
    else:
        parts = [x] if enc["include_input"] else []
        for k in range(enc["frequencies"]):
            parts += [torch.sin(2.0**k * math.pi * x), torch.cos(2.0**k * math.pi * x)]
        g = torch.cat(parts, -1)
    with torch.no_grad():
        a = g
        for k, lin in enumerate(model.linears):
            a = lin(a)
            a = torch.relu(a) if k < len(model.linears) - 1 else a
        assert_close(loaded.model(x), a, a.dtype)


def test_spec_json_round_trip_of_new_fields():
    spec = ArchSpec(3, 1, [8, 8], activation="sine", out_activation="sigmoid", encoding="positional", frequencies=4,
                    include_input=False, pe_convention="nerfstudio", pe_min_exp=0.0, pe_max_exp=3.0)  # fmt: skip
    assert ArchSpec.from_dict(json.loads(spec.to_json())) == spec
    with pytest.raises(SpecError, match="pe_min_exp and pe_max_exp"):
        ArchSpec(3, 1, [8], encoding="positional", frequencies=4, pe_convention="nerfstudio")
    with pytest.raises(SpecError, match="always includes x"):
        ArchSpec(3, 1, [8], encoding="positional", frequencies=4, pe_convention="finer", include_input=False)


def test_ambiguous_is_a_checkpoint_error():
    assert issubclass(AmbiguousArchitectureError, CheckpointError)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_too_many_tensors_refused_from_the_index(tmp_path, cli, monkeypatch, suffix):
    """A million tiny tensors took 52-97 s in info: the count is read from the zip directory / the
    safetensors header size before anything is unpickled (a million: refused in well under a second)."""
    import inrdiag.checkpoints.read as ck

    monkeypatch.setattr(ck, "MAX_TENSORS", 50)
    monkeypatch.setattr(ck, "MAX_HEADER_BYTES", 2000)
    sd = {**plain_state(), **{f"s.{i}": torch.zeros(1) for i in range(100)}}
    if suffix == ".pt":
        torch.save(sd, tmp_path / "many.pt")
    else:
        save_file(sd, str(tmp_path / "many.safetensors"))
    one_line_error(cli("info", tmp_path / f"many{suffix}", *FLAGS), "more")


def test_safetensors_header_length_starting_with_pickle_byte(tmp_path):
    """A safetensors header length whose low byte is 0x80 (b"\\x80...") is not a pickle."""
    import struct

    sd = {**plain_state(), **{f"s.{i}": torch.zeros(1) for i in range(100)}}
    for extra in range(300):
        sd[f"pad{'x' * extra}"] = torch.zeros(1)
        save_file(sd, str(tmp_path / "h.safetensors"))
        if (tmp_path / "h.safetensors").read_bytes()[:1] == b"\x80":
            break
        del sd[f"pad{'x' * extra}"]
    assert struct.unpack("<Q", (tmp_path / "h.safetensors").read_bytes()[:8])[0] % 256 == 0x80
    from inrdiag.checkpoints.read import read_checkpoint

    assert read_checkpoint(tmp_path / "h.safetensors").file_format == "safetensors"
