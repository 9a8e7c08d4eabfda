"""Every supported checkpoint layout, built here from a CoordMLP with that codebase's key names.

Each loaded model is compared with an independent forward pass written from the codebase's
own definition (e.g. official SIREN: ``sin(30 (W x + b))`` in every layer but the last).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import save_file
from tolerances import assert_close

import inrdiag
from inrdiag.checkpoints import layouts
from inrdiag.errors import AmbiguousArchitectureError, CheckpointError, SpecError


def weights(n_layers=4, width=16, d=2, out=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    dims = [d] + [width] * (n_layers - 1) + [out]
    return [(torch.randn(dims[i + 1], dims[i], generator=g) / dims[i] ** 0.5,
             torch.randn(dims[i + 1], generator=g) * 0.1) for i in range(n_layers)]  # fmt: skip


def ref_forward(ws, x, act, w0=30.0, w0_hidden=None, enc=None):
    w0_hidden = w0 if w0_hidden is None else w0_hidden
    a = enc(x) if enc else x
    for k, (W, b) in enumerate(ws):
        h = a @ W.T + b
        if k == len(ws) - 1:
            return h
        w = w0 if k == 0 else w0_hidden
        a = {"relu": torch.relu, "sine": lambda h: torch.sin(w * h),
             "finer": lambda h: torch.sin(w * (h.abs() + 1) * h)}[act](h)  # fmt: skip


def check_same(loaded, ws, act, **kw):
    x = torch.rand(50, loaded.spec.in_features) * 2 - 1
    with torch.no_grad():
        assert_close(loaded.model(x), ref_forward(ws, x, act, **kw), torch.float32)


def test_siren_official(tmp_path):
    ws = weights()
    sd = {}
    for i, (W, b) in enumerate(ws):
        sd[f"net.net.{i}.0.weight"], sd[f"net.net.{i}.0.bias"] = W, b
    torch.save(sd, tmp_path / "model_final.pth")
    # FCBlock writes these keys for all 7 of its nonlinearities: the activation is asked, not guessed.
    with pytest.raises(AmbiguousArchitectureError, match="--activation"):
        inrdiag.load(tmp_path / "model_final.pth")
    loaded = inrdiag.load(tmp_path / "model_final.pth", activation="sine")
    assert loaded.layout.startswith("siren-official")
    assert loaded.spec.activation == "sine" and loaded.spec.w0 == 30 and loaded.spec.w0_hidden == 30
    check_same(loaded, ws, "sine")
    relu = inrdiag.load(tmp_path / "model_final.pth", activation="relu")
    assert relu.sources["activation"] == "flag --activation"
    check_same(relu, ws, "relu")


@pytest.mark.parametrize("wrapper,act", [(None, "sine"), ("model_state", "finer")])
def test_siren_notebook_and_finer(tmp_path, wrapper, act):
    ws = weights()
    sd = {}
    for i, (W, b) in enumerate(ws[:-1]):
        sd[f"net.{i}.linear.weight"], sd[f"net.{i}.linear.bias"] = W, b
    sd[f"net.{len(ws) - 1}.weight"], sd[f"net.{len(ws) - 1}.bias"] = ws[-1]
    obj = sd if wrapper is None else {wrapper: sd, "train_iter": 100, "pred_img": torch.zeros(4, 4, 3)}
    torch.save(obj, tmp_path / "ckpt.pt")
    # net.{i}.linear is shared by the SIREN notebook, FINER and WIRE, and {"model_state"} wraps all of
    # FINER's model types: the activation is asked (it used to be guessed: sine / finer).
    with pytest.raises(AmbiguousArchitectureError, match="--activation"):
        inrdiag.load(tmp_path / "ckpt.pt")
    loaded = inrdiag.load(tmp_path / "ckpt.pt", activation=act)
    assert loaded.spec.activation == act
    check_same(loaded, ws, act)
    if wrapper:
        unused = {t.key: t for t in loaded.tensors if not t.used}
        assert "pred_img" in unused and "train_iter" in unused


@pytest.mark.parametrize("container", ["net", "layers"])
def test_siren_pytorch(tmp_path, container):
    ws = weights()
    sd = {}
    for i, (W, b) in enumerate(ws[:-1]):
        sd[f"{container}.{i}.weight"], sd[f"{container}.{i}.bias"] = W, b
    sd["last_layer.weight"], sd["last_layer.bias"] = ws[-1]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "sp.safetensors"))
    # final_activation is never stored; net.{i} (<= 0.0.9) does not tell the hidden w0 (30 or 1).
    with pytest.raises(AmbiguousArchitectureError, match="--out-activation"):
        inrdiag.load(tmp_path / "sp.safetensors")
    w0h = {"w0_hidden": 1.0} if container == "net" else {}
    loaded = inrdiag.load(tmp_path / "sp.safetensors", out_activation="none", **w0h)
    assert loaded.layout.startswith("siren-pytorch")
    assert (loaded.spec.w0, loaded.spec.w0_hidden) == (30.0, 1.0)
    check_same(loaded, ws, "sine", w0=30.0, w0_hidden=1.0)
    loaded = inrdiag.load(tmp_path / "sp.safetensors", w0_hidden=30.0, out_activation="none")
    check_same(loaded, ws, "sine", w0=30.0, w0_hidden=30.0)


def test_plain_sequential_needs_activation_flag(tmp_path, cli):
    ws = weights()
    sd = {}
    for i, (W, b) in enumerate(ws):
        sd[f"{2 * i}.weight"], sd[f"{2 * i}.bias"] = W, b
    torch.save(sd, tmp_path / "seq.pt")
    with pytest.raises(AmbiguousArchitectureError, match="--activation"):
        inrdiag.load(tmp_path / "seq.pt")
    r = cli("info", tmp_path / "seq.pt")
    assert r.code == 2 and r.err.startswith("error: ") and "--activation" in r.err and len(r.err.splitlines()) == 1
    loaded = inrdiag.load(tmp_path / "seq.pt", activation="relu", out_activation="none")
    check_same(loaded, ws, "relu")
    with pytest.raises(AmbiguousArchitectureError, match="--w0"):
        inrdiag.load(tmp_path / "seq.pt", activation="sine")
    check_same(inrdiag.load(tmp_path / "seq.pt", activation="sine", w0=7.0, out_activation="none"), ws, "sine", w0=7.0)


def test_sequential_with_batchnorm(tmp_path):
    model = tiny_model(batchnorm=[0, 2], dtype=torch.float32)
    sd = {}
    seq_index = 0
    for k, lin in enumerate(model.linears):
        sd[f"{seq_index}.weight"], sd[f"{seq_index}.bias"] = lin.weight, lin.bias
        seq_index += 1
        if str(k) in model.norms:
            for name, t in model.norms[str(k)].state_dict().items():
                sd[f"{seq_index}.{name}"] = t
            seq_index += 1
        seq_index += 1  # the activation module
    torch.save(sd, tmp_path / "bn.pt")
    loaded = inrdiag.load(tmp_path / "bn.pt", activation="relu", out_activation="none")
    assert loaded.spec.batchnorm == [0, 2]
    assert all(t.used for t in loaded.tensors)
    x = torch.rand(30, 2) * 2 - 1
    with torch.no_grad():
        assert_close(loaded.model(x), model(x), torch.float32)


def test_nerfstudio_with_b_matrix(tmp_path):
    m, d = 8, 2
    B = torch.randn(d, m)  # nerfstudio RFFEncoding stores b_matrix as (in_dim, num_frequencies)
    g = torch.Generator().manual_seed(1)
    dims = [2 * m, 16, 16, 1]
    ws = [
        (torch.randn(dims[i + 1], dims[i], generator=g) * 0.3, torch.randn(dims[i + 1], generator=g) * 0.1)
        for i in range(3)
    ]
    sd = {"field.position_encoding.b_matrix": B}
    for i, (W, b) in enumerate(ws):
        sd[f"field.mlp_base.layers.{i}.weight"], sd[f"field.mlp_base.layers.{i}.bias"] = W, b
    torch.save({"step": 10, "pipeline": sd, "optimizers": {"fields": {"state": {0: {"exp_avg": torch.zeros(3, 3)}}}}},
               tmp_path / "step-000000010.ckpt")  # fmt: skip
    # layers.{i} is not nerfstudio's alone, and its MLP takes the activation as an argument: asked.
    with pytest.raises(AmbiguousArchitectureError, match="--activation"):
        inrdiag.load(tmp_path / "step-000000010.ckpt")
    loaded = inrdiag.load(tmp_path / "step-000000010.ckpt", activation="relu", out_activation="none")
    assert loaded.layout.startswith("layers.{i}") and loaded.spec.ff_convention == "nerfstudio"
    assert loaded.spec.encoding == "fourier" and loaded.spec.fourier_features == m

    def enc(x):  # gamma(x) = sin([2 pi x B, 2 pi x B + pi/2]) = [sin, cos]
        s = (2 * torch.pi * x) @ B
        return torch.sin(torch.cat([s, s + torch.pi / 2], dim=-1))

    check_same(loaded, ws, "relu", enc=enc)
    assert any(t.key.startswith("optimizers") and not t.used for t in loaded.tensors)


def test_positional_encoding_needs_frequencies(tmp_path):
    model = tiny_model(encoding="positional", frequencies=4, dtype=torch.float32)
    sd = {k.replace("linears.", "mlp."): v for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "pe.pth")
    with pytest.raises(AmbiguousArchitectureError, match="--encoding positional --frequencies"):
        inrdiag.load(tmp_path / "pe.pth", activation="relu", out_activation="none")
    with pytest.raises(AmbiguousArchitectureError, match="--pe-convention"):
        inrdiag.load(
            tmp_path / "pe.pth", activation="relu", out_activation="none", encoding="positional", frequencies=4
        )
    loaded = inrdiag.load(tmp_path / "pe.pth", activation="relu", out_activation="none", encoding="positional",
                          frequencies=4, pe_convention="inrdiag")  # fmt: skip
    assert loaded.spec.in_features == 2 and loaded.spec.include_input
    x = torch.rand(20, 2) * 2 - 1
    with torch.no_grad():
        assert_close(loaded.model(x), model(x), torch.float32)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model.", "_model.", "module._orig_mod."])
def test_prefixes_and_lightning_wrapper(tmp_path, prefix):
    model = tiny_model(dtype=torch.float32)
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 7}, tmp_path / "l.ckpt")
    loaded = inrdiag.load(tmp_path / "l.ckpt", activation="relu", out_activation="none")
    assert loaded.layout.startswith("inrdiag state dict")
    x = torch.rand(20, 2) * 2 - 1
    with torch.no_grad():
        assert_close(loaded.model(x), model(x), torch.float32)
    assert {"epoch", "global_step"} <= {t.key for t in loaded.tensors if not t.used}


def test_strainer_cohort_heads(tmp_path, cli):
    g = torch.Generator().manual_seed(2)
    sd = {}
    dims = [2, 16, 16, 16]
    enc = []
    for k in range(3):
        W, b = torch.randn(dims[k + 1], dims[k], generator=g) / dims[k] ** 0.5, torch.randn(dims[k + 1], generator=g)
        sd[f"encoder.{2 * k}.weight"], sd[f"encoder.{2 * k}.bias"] = W, b
        enc.append((W, b))
    heads = []
    for d in range(3):
        W1, b1 = torch.randn(16, 16, generator=g) / 4, torch.randn(16, generator=g)
        W2, b2 = torch.randn(1, 16, generator=g) / 4, torch.randn(1, generator=g)
        sd[f"decoder.{d}.0.weight"], sd[f"decoder.{d}.0.bias"] = W1, b1
        sd[f"decoder.{d}.2.weight"], sd[f"decoder.{d}.2.bias"] = W2, b2
        heads.append([(W1, b1), (W2, b2)])
    torch.save(sd, tmp_path / "strainer.pt")
    flags = {"activation": "sine", "w0": 30.0, "out_activation": "none"}  # encoder/decoder keys are generic
    for head in (0, 2):
        loaded = inrdiag.load(tmp_path / "strainer.pt", head=head, **flags)
        assert loaded.heads == 3 and loaded.shared_layers == 3 and loaded.head == head
        check_same(loaded, enc + heads[head], "sine")
    with pytest.raises(SpecError, match="--head 3 out of range"):
        inrdiag.load(tmp_path / "strainer.pt", head=3, **flags)
    r = cli("rank", tmp_path / "strainer.pt", "--grid", "8", "--json", "--activation", "sine", "--w0", "30",
            "--out-activation", "none")  # fmt: skip
    assert r.code == 0
    data = r.json()
    assert data["freeze_candidates"] == [0, 1, 2]
    srs = [layer["weight_stable_rank"] for layer in data["layers"][:3]]
    assert data["recommended_freeze_depth"] == 1 + srs.index(max(srs))


def test_inrdiag_format_round_trip_and_metadata(tmp_path):
    model = tiny_model(activation="sine", encoding="fourier", fourier_features=4, batchnorm=[1],
                       w0=20.0, w0_hidden=5.0, dtype=torch.float32)  # fmt: skip
    inrdiag.save(model, tmp_path / "m.safetensors", provenance={"init": "siren", "seed": 3})
    loaded = inrdiag.load(tmp_path / "m.safetensors")
    assert loaded.layout == "inrdiag" and loaded.spec == model.spec
    assert loaded.provenance["init"] == "siren" and loaded.provenance["inrdiag_version"] == inrdiag.__version__
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(inrdiag.InrdiagError, match="exists"):
        inrdiag.save(model, tmp_path / "m.safetensors")
    inrdiag.save(model, tmp_path / "m.safetensors", force=True)


def test_float64_checkpoint_stays_float64(tmp_path):
    model = tiny_model(dtype=torch.float64)
    inrdiag.save(model, tmp_path / "m64.safetensors")
    loaded = inrdiag.load(tmp_path / "m64.safetensors")
    assert loaded.model.linears[0].weight.dtype == torch.float64


def test_stored_metadata_validated(tmp_path):
    model = tiny_model(dtype=torch.float32)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"format": 1, "arch": {**model.spec.to_dict(), "hidden": [16, 16, 8]}}
    save_file(sd, str(tmp_path / "bad.safetensors"), metadata={"inrdiag": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="shape"):
        inrdiag.load(tmp_path / "bad.safetensors")
    meta = {"format": 99, "arch": model.spec.to_dict()}
    save_file(sd, str(tmp_path / "new.safetensors"), metadata={"inrdiag": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="format 99"):
        inrdiag.load(tmp_path / "new.safetensors")


# ---------------------------------------------------------------- the registry of layouts
def _chain(keys, wrapper="", skipped=None):
    from inrdiag.checkpoints.layouts.keys import linear_paths
    from inrdiag.checkpoints.read import RawCheckpoint

    tensors = {k: torch.zeros(4, 4) if k.endswith("weight") else torch.zeros(4, 2) for k in keys}
    raw = RawCheckpoint("f.pt", "torch (weights_only)", tensors, None, dict(skipped or {}), wrapper)
    return layouts.Chain(linear_paths(tensors), raw)


@pytest.mark.parametrize(
    "keys,wrapper,skipped,name",
    [
        (["net.net.0.0.weight", "net.net.1.0.weight"], "", None, "siren-official"),
        (["net.0.linear.weight", "net.1.linear.weight", "net.2.weight"], "", None, "net-linear"),
        (["net.0.linear.weight", "net.1.linear.weight"], "", None, "net-linear-hidden-out"),
        (["net.0.linear.weight", "net.1.weight"], "model_state", {"train_psnr": "list", "pred_img": "x"},
         "finer-train-image"),
        (["0.weight", "2.weight"], "model_state.net", {"train_psnr": "list", "pred_img": "x"}, "finer-pemlp"),
        (["layers.0.weight", "layers.1.weight", "last_layer.weight"], "", None, "siren-pytorch-0.1"),
        (["net.0.weight", "net.1.weight", "last_layer.weight"], "", None, "siren-pytorch-0.0"),
        (["model.1.weight", "model.3.weight", "model.0.B"], "", None, "alpine-ffn"),
        (["model.1.weight", "model.3.weight"], "", None, "generic"),
        (["linears.0.weight", "linears.1.weight"], "", None, "inrdiag-state-dict"),
        (["layers.0.weight", "layers.1.weight"], "", None, "layers"),
        (["0.weight", "2.weight"], "", None, "sequential"),
        (["fc1.weight", "fc2.weight"], "", None, "generic"),
    ],
)  # fmt: skip
def test_registry_detects_each_layout_in_order(keys, wrapper, skipped, name):
    """Each entry is found by its keys; where keys overlap, the more specific entry comes first."""
    chain = _chain(keys, wrapper, skipped)
    assert layouts.detect(chain).name == name
    assert layouts.layout(name).matches is not None and layouts.layout(name).matches(chain)


def test_registry_entries_are_documented_and_sourced():
    from pathlib import Path

    from inrdiag.checkpoints.layouts.registry import BY_NAME

    doc = (Path(__file__).resolve().parents[1] / "docs" / "loading.md").read_text()
    assert layouts.LAYOUTS[-1].name == "generic" and set(BY_NAME) >= {e.name for e in layouts.LAYOUTS} | {"cohort"}
    for name, entry in BY_NAME.items():
        assert f"`{name}`" in doc, name  # docs/loading.md's table names every entry
        assert entry.label and entry.codebase
        assert entry.checked or name in ("sequential", "generic"), name  # a codebase's rule names its source
        assert set(entry.fixed).isdisjoint(entry.why), name  # a property is decided or asked, not both
    assert layouts.layout("siren-pytorch-0.0").asks == ["--out-activation", "--w0-hidden"]
    with pytest.raises(KeyError, match="registered: siren-official"):
        layouts.layout("no-such-layout")


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"encoding": "fourier", "fourier_features": 5, "batchnorm": [0, 2]},
        {"encoding": "positional", "frequencies": 3, "bias": False},
    ],
)
def test_key_names_from_the_spec_equal_the_built_model(kw):
    """``ArchSpec.state_shapes``/``layer_keys`` name CoordMLP's tensors without building one."""
    spec = inrdiag.ArchSpec(in_features=2, out_features=3, hidden=[6, 5, 4], **kw)
    model = inrdiag.CoordMLP(spec)
    assert spec.state_shapes() == {k: list(v.shape) for k, v in model.state_dict().items()}  # names, order, shapes
    assert spec.layer_keys() == [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def test_loaded_keeps_the_record_fields_of_its_resolution(tmp_path):
    from dataclasses import fields

    from inrdiag.checkpoints.layouts import LoadRecord, Resolved

    shared = {f.name for f in fields(LoadRecord)}
    assert shared <= {f.name for f in fields(inrdiag.Loaded)} and shared <= {f.name for f in fields(Resolved)}
    path = tmp_path / "m.safetensors"
    inrdiag.save(tiny_model(), path)
    loaded = inrdiag.load(path)
    assert list(loaded.to_dict()) == ["path", "file_format", "layout", "arch", "sources", "layers", "parameters",
                                      "tensors", "unused_tensors", "nonfinite", "cohort", "provenance", "notes"]  # fmt: skip
    assert (
        loaded.layer_keys == ["linears.0", "linears.1", "linears.2", "linears.3"] and loaded.spec is loaded.model.spec
    )
