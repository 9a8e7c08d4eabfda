"""SAELens interop both ways, against files in SAELens 6's layout written here (no sae_lens needed).

The reference functions below restate SAELens's inference math (sae_lens/saes/{standard,topk,jumprelu}_sae.py)
directly in float64, so the loaded SAE is checked against an independent computation, not against itself.
An optional cross-check with the real package runs when ``sae_lens`` is importable.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from tolerances import assert_close

from inrdiag.sae.model import SAEConfig, SAEError, make_sae
from inrdiag.sae.saelens import SAELENS_FORMAT_VERSION, load_sae, sae_file_info, save_sae

F64, F32 = torch.float64, torch.float32

D_IN, D_SAE = 12, 40


def _weights(gen, norms=None):
    W_enc = torch.randn(D_IN, D_SAE, generator=gen, dtype=torch.float64) / D_IN**0.5
    W_dec = torch.randn(D_SAE, D_IN, generator=gen, dtype=torch.float64)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) * (norms if norms is not None else 1.0)
    b_enc = 0.1 * torch.randn(D_SAE, generator=gen, dtype=torch.float64)
    b_dec = 0.1 * torch.randn(D_IN, generator=gen, dtype=torch.float64)
    return {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}


def _write(folder, cfg, tensors):
    """A folder as SAELens's ``save_model`` / ``save_inference_model`` writes it (constants.py names)."""
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    base = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float64", "device": "cpu", "apply_b_dec_to_input": True,
            "normalize_activations": "none", "reshape_activations": "none",
            "metadata": {"sae_lens_version": "6.18.0", "sae_lens_training_version": "6.18.0",
                         "model_name": "gpt2", "hook_name": "blocks.3.hook_resid_post"}}  # fmt: skip
    (folder / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return folder


def _pre(w, x):
    return (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]


def ref_topk(w, x, k, rescale):
    h = _pre(w, x)
    n = w["W_dec"].norm(dim=-1)
    if rescale:
        h = h * n
    v, i = torch.topk(h, k, dim=-1)
    f = torch.zeros_like(h).scatter_(-1, i, v.relu())
    g = f / n if rescale else f
    return f, g @ w["W_dec"] + w["b_dec"]


def ref_jumprelu(w, x, threshold):
    h = _pre(w, x)
    f = h.relu() * (h > threshold)
    return f, f @ w["W_dec"] + w["b_dec"]


@pytest.fixture
def x():
    return torch.randn(300, D_IN, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("unit", [True, False])
def test_topk_rescaled_by_decoder_norm_is_exact(tmp_path, x, unit):
    """SAELens's training default rescale_acts_by_decoder_norm=True: same codes and reconstruction, whether
    the decoder rows are unit norm (the usual file) or not."""
    gen = torch.Generator().manual_seed(0)
    norms = None if unit else torch.rand(D_SAE, 1, generator=gen, dtype=torch.float64) * 3 + 0.05
    w = _weights(gen, norms)
    d = _write(tmp_path / "s", {"architecture": "topk", "k": 5, "rescale_acts_by_decoder_norm": True}, w)
    sae = load_sae(d).sae
    f, xhat = ref_topk(w, x, 5, rescale=True)
    with torch.no_grad():
        assert_close(sae.encode(x), f, F64)
        assert_close(sae(x), xhat, F64)
    if not unit:  # the rescaling changes which atoms win: the un-rescaled reading would be wrong
        assert not torch.equal(ref_topk(w, x, 5, rescale=False)[0] > 0, f > 0)
    assert sae_file_info(d, sae, json.loads((d / "cfg.json").read_text()))["rescale_acts_by_decoder_norm"] is True


def test_topk_rescale_float32_file(tmp_path, x):
    gen = torch.Generator().manual_seed(3)
    w = _weights(gen, torch.rand(D_SAE, 1, generator=gen, dtype=torch.float64) + 0.5)
    w32 = {k: v.float() for k, v in w.items()}
    d = _write(tmp_path / "s", {"architecture": "topk", "k": 4, "rescale_acts_by_decoder_norm": True,
                                "dtype": "float32"}, w32)  # fmt: skip
    sae = load_sae(d).sae
    assert sae.W_enc.dtype == torch.float32
    f, xhat = ref_topk({k: v.double() for k, v in w32.items()}, x, 4, rescale=True)
    with torch.no_grad():
        assert_close(sae(x.float()), xhat, F32)
        assert_close(sae.encode(x.float()), f, F32)


def test_rescale_with_a_zero_decoder_row_is_refused(tmp_path):
    w = _weights(torch.Generator().manual_seed(0))
    w["W_dec"][7] = 0
    d = _write(tmp_path / "s", {"architecture": "topk", "k": 3, "rescale_acts_by_decoder_norm": True}, w)
    with pytest.raises(SAEError, match="zero decoder row"):
        load_sae(d)
    (d / "cfg.json").write_text(json.dumps({**json.loads((d / "cfg.json").read_text()),
                                            "rescale_acts_by_decoder_norm": "yes"}))  # fmt: skip
    with pytest.raises(SAEError, match="true or false"):
        load_sae(d)


def test_jumprelu(tmp_path, x):
    gen = torch.Generator().manual_seed(2)
    w = _weights(gen)
    thr = torch.rand(D_SAE, generator=gen, dtype=torch.float64) * 0.6
    thr[:3] = -0.2  # a negative threshold gates nothing beyond the ReLU
    d = _write(tmp_path / "j", {"architecture": "jumprelu"}, {**w, "threshold": thr})
    loaded = load_sae(d)
    sae, cfg = loaded.sae, loaded.cfg
    f, xhat = ref_jumprelu(w, x, thr)
    assert 0 < int((f > 0).sum()) < f.numel() // 2
    with torch.no_grad():
        assert torch.equal(sae.encode(x), f)
        assert_close(sae(x), xhat, F64)
    info = sae_file_info(d, sae, cfg)
    assert loaded.info == info
    assert info["architecture"] == "jumprelu" and info["model_name"] == "gpt2"
    assert info["hook_name"] == "blocks.3.hook_resid_post" and info["written_by"] == "SAELens"
    assert info["threshold"]["min"] == 0.0 and info["threshold"]["max"] == pytest.approx(float(thr.max()))
    # saved again by inrdiag: still a JumpReLU SAE in SAELens's layout, identical outputs
    save_sae(sae, SAEConfig(atoms=D_SAE, kind="relu", steps=1), tmp_path / "again", {"model_name": "m"})
    c = json.loads((tmp_path / "again" / "cfg.json").read_text())
    assert c["architecture"] == "jumprelu" and "k" not in c
    back = load_sae(tmp_path / "again").sae
    with torch.no_grad():
        assert torch.equal(back(x), sae(x))


def test_jumprelu_training_file_with_log_threshold(tmp_path, x):
    gen = torch.Generator().manual_seed(4)
    w = _weights(gen)
    thr = torch.rand(D_SAE, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    d = _write(tmp_path / "j", {"architecture": "jumprelu", "l0_coefficient": 1.0, "jumprelu_bandwidth": 0.05},
               {**w, "log_threshold": thr.log()})  # fmt: skip
    loaded = load_sae(d)
    sae, cfg = loaded.sae, loaded.cfg
    with torch.no_grad():
        assert_close(sae(x), ref_jumprelu(w, x, thr)[1], F64)
    info = sae_file_info(d, sae, cfg)
    assert info["converted_from"] == "log_threshold" and info["training"] == {
        "by": "SAELens",
        "l0_coefficient": 1.0,
        "jumprelu_bandwidth": 0.05,
    }


def test_batchtopk_training_file_reads_as_its_inference_jumprelu(tmp_path, x):
    """A BatchTopK training file (architecture batchtopk, scalar topk_threshold, rescale default True) reads as
    SAELens saves it for inference: decoder norms folded, one JumpReLU threshold for every atom."""
    gen = torch.Generator().manual_seed(5)
    w = _weights(gen, torch.rand(D_SAE, 1, generator=gen, dtype=torch.float64) + 0.5)
    t = 0.3
    d = _write(tmp_path / "b", {"architecture": "batchtopk", "k": 6.0},
               {**w, "topk_threshold": torch.tensor(t, dtype=torch.float64)})  # fmt: skip
    loaded = load_sae(d)
    sae, cfg = loaded.sae, loaded.cfg
    n = w["W_dec"].norm(dim=-1)
    h = _pre(w, x) * n
    f = h.relu() * (h > t)
    with torch.no_grad():
        assert_close(sae.encode(x), f, F64)
        assert_close(sae(x), (f / n) @ w["W_dec"] + w["b_dec"], F64)
    assert sae_file_info(d, sae, cfg)["architecture"] == "jumprelu"


def test_inrdiag_files_keep_their_metadata_in_saelens_6(tmp_path):
    """SAELens 6 keeps ``metadata`` only when metadata.sae_lens_version >= 6.0.0-rc.0 (its
    handle_config_defaulting); restated here so the test needs no sae_lens."""
    packaging = pytest.importorskip("packaging.version")
    sae = make_sae(D_IN, D_SAE, "topk", 3)
    meta = {"model_name": "m.safetensors", "hook_name": "layer 1 (linears.1) activations", "target": "t.png",
            "grid": [10, 10]}  # fmt: skip
    save_sae(sae, SAEConfig(atoms=D_SAE, k=3, steps=7), tmp_path / "o", meta)
    c = json.loads((tmp_path / "o" / "cfg.json").read_text())
    v = c["metadata"]["sae_lens_version"]
    assert v == SAELENS_FORMAT_VERSION and packaging.Version(v) >= packaging.Version("6.0.0-rc.0")
    assert str(packaging.Version(v)) == v  # the plain X.Y.Z form SAELens writes
    for key, val in meta.items():
        assert c["metadata"][key] == val
    assert c["metadata"]["inrdiag"]["steps"] == 7 and c["rescale_acts_by_decoder_norm"] is False


def test_cli_shows_the_files_own_settings(cli, tmp_path):
    """An analysed SAELens file is described by its own architecture, sparsity and metadata, not by
    inrdiag's training defaults."""
    from conftest import tiny_model

    from inrdiag.checkpoints.save import save

    model = tiny_model(hidden=(D_IN, D_IN), dtype=torch.float32)
    ck = tmp_path / "m.safetensors"
    save(model, ck)
    import imageio.v3 as iio
    import numpy as np

    img = tmp_path / "t.png"
    iio.imwrite(img, (np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8))
    gen = torch.Generator().manual_seed(6)
    w = {k: v.float() for k, v in _weights(gen, torch.rand(D_SAE, 1, generator=gen, dtype=torch.float64) + 0.5).items()}
    thr = torch.full((D_SAE,), 0.05)
    cases = {
        "topk": ({"architecture": "topk", "k": 4, "rescale_acts_by_decoder_norm": True, "dtype": "float32"}, w,
                 "TopK k=4"),
        "jumprelu": ({"architecture": "jumprelu", "dtype": "float32"}, {**w, "threshold": thr}, "JumpReLU"),
    }  # fmt: skip
    for name, (cfg, tensors, want) in cases.items():
        d = _write(tmp_path / name, cfg, tensors)
        r = cli("sae", ck, "--layer", "0", "--sae", d, "--target", img, "--grid", "8")
        assert r.code == 0, r.err
        assert want in r.out and "L1 0.1" not in r.out and "gpt2" in r.out and "blocks.3.hook_resid_post" in r.out
        j = cli("sae", ck, "--layer", "0", "--sae", d, "--target", img, "--grid", "8", "--json").json()
        assert j["sae"]["architecture"] == name and j["sae"]["file"]["model_name"] == "gpt2"
        assert j["sae"]["l1"] is None and j["sae"]["lr"] is None
    assert "rescale" in cli("sae", ck, "--layer", "0", "--sae", tmp_path / "topk", "--target", img).out


def test_optional_cross_check_with_sae_lens(tmp_path, x):
    """With sae_lens installed: its loader reads inrdiag's file with the metadata kept, and its encode/decode
    of a rescaled TopK and a JumpReLU file match inrdiag's."""
    sl = pytest.importorskip("sae_lens")
    sae = make_sae(D_IN, D_SAE, "topk", 3, dtype=torch.float64)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p))
    save_sae(sae, SAEConfig(atoms=D_SAE, k=3, steps=7), tmp_path / "o", {"model_name": "m", "hook_name": "h"})
    theirs = sl.SAE.load_from_disk(str(tmp_path / "o"))
    assert theirs.cfg.metadata.model_name == "m" and theirs.cfg.metadata["inrdiag"]["steps"] == 7
    with torch.no_grad():
        assert_close(theirs(x), sae(x), F64)
    gen = torch.Generator().manual_seed(7)
    w = _weights(gen, torch.rand(D_SAE, 1, generator=gen, dtype=torch.float64) + 0.5)
    thr = torch.rand(D_SAE, generator=gen, dtype=torch.float64) * 0.5
    for name, cfg, tensors in (("t", {"architecture": "topk", "k": 5, "rescale_acts_by_decoder_norm": True}, w),
                               ("j", {"architecture": "jumprelu"}, {**w, "threshold": thr})):  # fmt: skip
        d = _write(tmp_path / name, cfg, tensors)
        ours = load_sae(d).sae
        theirs = sl.SAE.load_from_disk(str(d))
        with torch.no_grad():
            assert_close(ours.encode(x), theirs.encode(x), F64)
            assert_close(ours(x), theirs(x), F64)


# ---------------------------------------------------------------- the files stay byte-for-byte what they were
def _filled(sae):
    """Deterministic weights (no RNG): parameter i holds linspace(-1, 1) * (i + 1)."""
    with torch.no_grad():
        for i, p in enumerate(sae.parameters()):
            p.copy_(torch.linspace(-1, 1, p.numel(), dtype=p.dtype).reshape(p.shape) * (i + 1))
    return sae


#: sha256 of sae_weights.safetensors as written before the autoencoder became one module-level class (issue 12).
WEIGHTS_SHA256 = {
    "topk": "75944198a523b80bfcbdea8e9ec06808188852ceda6c33bbf0477ed4f7693d05",
    "relu": "06b5822aaf396662ab24254b402a56213f30eb30c66e21c13a5f7e546ae1f31e",
    "jumprelu": "2433b7856fd7b7366aa488cd27aba2dd8a399df95e4ac9607b9d4f32cb972d15",
}
TOPK_CFG = """{
  "architecture": "topk",
  "d_in": 6,
  "d_sae": 10,
  "dtype": "float32",
  "device": "cpu",
  "apply_b_dec_to_input": true,
  "normalize_activations": "none",
  "reshape_activations": "none",
  "metadata": {
    "sae_lens_version": "6.0.0",
    "sae_lens_training_version": null,
    "inrdiag_version": "VERSION",
    "schema_version": SCHEMA,
    "model_name": "m",
    "hook_name": "h",
    "inrdiag": {
      "atoms": 10,
      "kind": "topk",
      "k": 3,
      "l1": 0.1,
      "steps": 7,
      "batch_size": 1024,
      "lr": 0.001,
      "seed": 0,
      "aux_coef": 0.03125,
      "dead_after": 100
    }
  },
  "k": 3,
  "rescale_acts_by_decoder_norm": false
}
"""


def test_saved_files_are_byte_for_byte_unchanged(tmp_path):
    import hashlib

    from inrdiag import __version__
    from inrdiag.schema import SCHEMA_VERSION

    def sha(folder):
        return hashlib.sha256((folder / "sae_weights.safetensors").read_bytes()).hexdigest()

    meta = {"model_name": "m", "hook_name": "h"}
    save_sae(_filled(make_sae(6, 10, "topk", 3)), SAEConfig(atoms=10, k=3, steps=7), tmp_path / "t", meta)
    assert sha(tmp_path / "t") == WEIGHTS_SHA256["topk"]
    want = TOPK_CFG.replace('"VERSION"', json.dumps(__version__)).replace("SCHEMA", json.dumps(SCHEMA_VERSION))
    assert (tmp_path / "t" / "cfg.json").read_text() == want
    relu = _filled(make_sae(6, 10, "relu", 32, dtype=torch.float64))
    save_sae(relu, SAEConfig(atoms=10, kind="relu", k=3, steps=7), tmp_path / "r", meta)
    assert sha(tmp_path / "r") == WEIGHTS_SHA256["relu"]
    shapes = {"W_enc": (6, 10), "b_enc": (10,), "W_dec": (10, 6), "b_dec": (6,), "threshold": (10,)}
    w = {
        k: torch.linspace(-1, 1, torch.Size(s).numel()).reshape(s) * (i + 1) for i, (k, s) in enumerate(shapes.items())
    }
    src = tmp_path / "j_src"
    src.mkdir()
    save_file(w, str(src / "sae_weights.safetensors"))
    (src / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": 6, "d_sae": 10, "dtype": "float32"}))
    save_sae(load_sae(src).sae, SAEConfig(atoms=10, kind="relu", steps=1), tmp_path / "j", {"model_name": "m"})
    assert sha(tmp_path / "j") == WEIGHTS_SHA256["jumprelu"]


# ---------------------------------------------------------------- the report names every architecture right
def test_report_architecture_label_for_every_architecture(tmp_path):
    """Issue 12 item 5: SAEReport.to_dict() (the Python API, not only the CLI) says "jumprelu" for a JumpReLU SAE,
    "standard" only for a ReLU one, for files of each SAELens architecture and for modules given directly."""
    from conftest import tiny_model

    from inrdiag.grid import make_grid
    from inrdiag.sae.analysis import analyse
    from inrdiag.sae.model import JumpReLUSAE

    model = tiny_model(hidden=(D_IN, D_IN), dtype=torch.float32)
    x = make_grid((5, 5), dtype=torch.float32)
    y = torch.rand(25, 1, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(8)
    w = _weights(gen)
    thr = torch.full((D_SAE,), 0.05, dtype=torch.float64)
    files = {
        "standard": ({"architecture": "standard"}, w, "standard", "relu"),
        "topk": ({"architecture": "topk", "k": 4}, w, "topk", "topk"),
        "jumprelu": ({"architecture": "jumprelu"}, {**w, "threshold": thr}, "jumprelu", "jumprelu"),
        "batchtopk": ({"architecture": "batchtopk", "k": 4}, {**w, "topk_threshold": torch.tensor(0.05)},
                      "jumprelu", "jumprelu"),
    }  # fmt: skip
    for name, (cfg, tensors, arch, kind) in files.items():
        loaded = load_sae(_write(tmp_path / name, cfg, tensors))
        d = analyse(model, 0, x, y, "image", device="cpu", ablate=0, sae=loaded).report.to_dict()["sae"]
        assert (d["architecture"], d["kind"], d["file"]["architecture"]) == (arch, kind, arch), name
        assert d["lr"] is None and d["steps"] == 0  # not stated by a SAELens file
    assert d["file"]["converted_from"] == "topk_threshold"
    for sae, arch, kind in ((JumpReLUSAE(D_IN, D_SAE), "jumprelu", "jumprelu"),
                            (make_sae(D_IN, D_SAE, "relu", 0), "standard", "relu"),
                            (make_sae(D_IN, D_SAE, "topk", 3), "topk", "topk")):  # fmt: skip
        with torch.no_grad():
            sae.W_enc.copy_(w["W_enc"])
            sae.W_dec.copy_(w["W_dec"])
        d = analyse(model, 0, x, y, "image", device="cpu", ablate=0, sae=sae).report.to_dict()["sae"]
        assert (d["architecture"], d["kind"]) == (arch, kind) and "file" not in d
