"""--model-code: the user's own nn.Module class, built from their file, the checkpoint loaded strictly."""

from __future__ import annotations

import textwrap

import pytest
import torch
from tolerances import assert_close

from inrdiag.errors import CheckpointError
from inrdiag.models.usercode import ModelCode, ModelCodeError, load_user_model, match_prefix

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class SineLayer(nn.Module):
        def __init__(self, i, o, w0=30.0):
            super().__init__()
            self.w0 = w0
            self.linear = nn.Linear(i, o)

        def forward(self, x):
            return torch.sin(self.w0 * self.linear(x))

    class Siren(nn.Module):
        def __init__(self, in_features=2, hidden_features=16, hidden_layers=2, out_features=1):
            super().__init__()
            layers = [SineLayer(in_features, hidden_features)]
            layers += [SineLayer(hidden_features, hidden_features) for _ in range(hidden_layers)]
            layers.append(nn.Linear(hidden_features, out_features))
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x)

    def make_siren(width):
        return Siren(hidden_features=width)

    def not_a_module():
        return 3

    def broken():
        raise ValueError("boom")
    """
)


@pytest.fixture
def code_dir(tmp_path):
    (tmp_path / "models.py").write_text(MODELS)
    return tmp_path


def _siren(code_dir, **kw):
    return load_user_model.__globals__["build_module"](ModelCode(f"{code_dir}/models.py:Siren", (), kw))


def _save(code_dir, model, name="ck.pth", wrap=lambda sd: sd):
    path = code_dir / name
    torch.save(wrap(dict(model.state_dict())), path)
    return path


def test_loads_strictly_through_wrappers_and_prefixes(code_dir):
    torch.manual_seed(1)
    ref = _siren(code_dir, hidden_features=8)
    wrapped = {"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}, "epoch": 3,
               "optimizer": {"state": {"0": {"exp_avg": torch.zeros(3)}}}}  # fmt: skip
    path = code_dir / "ck.pth"
    torch.save(wrapped, path)
    got = load_user_model(path, ModelCode.parse(f"{code_dir}/models.py:Siren", '{"hidden_features": 8}'))
    assert got.prefix == "state_dict.module."
    x = torch.rand(33, 2) * 2 - 1
    with torch.no_grad():
        assert torch.equal(got.model(x), ref.eval()(x))
    assert not got.model.training
    assert {t.key for t in got.tensors if not t.used} == {"epoch", "optimizer.state.0.exp_avg"}
    # A factory and positional --model-args work the same way.
    fac = load_user_model(path, ModelCode.parse(f"{code_dir}/models.py:make_siren", "[8]"))
    with torch.no_grad():
        assert torch.equal(fac.model(x), ref(x))


def test_strict_errors_list_missing_unexpected_and_shapes(code_dir):
    ref = _siren(code_dir, hidden_features=8, hidden_layers=3)
    path = _save(code_dir, ref)
    code = f"{code_dir}/models.py:Siren"
    with pytest.raises(
        CheckpointError, match=r"missing 2 .*net\.3\.weight.*file has 4 it does not \(net\.3\.linear"
    ):  # file deeper
        load_user_model(path, ModelCode.parse(code, '{"hidden_features": 8, "hidden_layers": 2}'))
    with pytest.raises(CheckpointError, match=r"missing .*net\.4"):  # module deeper than file
        load_user_model(path, ModelCode.parse(code, '{"hidden_features": 8, "hidden_layers": 4}'))
    with pytest.raises(CheckpointError, match=r"another shape.*\[8, 2\] \(module: \[16, 2\]\)"):
        load_user_model(path, ModelCode.parse(code, '{"hidden_layers": 3}'))


def test_match_prefix_prefers_the_full_match_then_the_shortest():
    expected = ["net.0.weight", "net.0.bias"]
    assert match_prefix(["a.net.0.weight", "a.net.0.bias", "net.0.weight"], expected) == ("a.", [])
    assert match_prefix(["net.0.weight", "net.0.bias", "ema.net.0.weight", "ema.net.0.bias"], expected) == ("", [])
    assert match_prefix(["x.y"], expected) == ("", expected)


@pytest.mark.parametrize(
    "target,args,message",
    [
        ("models.py", None, "expected FILE.py:Name"),
        ("{dir}/missing.py:Siren", None, "no such file"),
        ("{dir}/models.py:Nope", None, "has no 'Nope'; it defines: SineLayer, Siren"),
        ("{dir}/models.py:Siren", "{bad", "not valid JSON"),
        ("{dir}/models.py:Siren", "3", "must be a JSON object"),
        ("{dir}/models.py:Siren", '{"depth": 3}', "unexpected keyword argument 'depth'"),
        ("{dir}/models.py:not_a_module", None, "returned a int, not a torch.nn.Module"),
        ("{dir}/models.py:broken", None, "raised ValueError: boom"),
        ("no_such_package_xyz.models:Siren", None, "cannot import module"),
    ],
)
def test_bad_model_code_is_one_line_exit_2(code_dir, cli, target, args, message):
    ref = _siren(code_dir)
    path = _save(code_dir, ref)
    argv = ["info", path, "--model-code", target.format(dir=code_dir)]
    if args is not None:
        argv += ["--model-args", args]
    r = cli(*argv)
    assert r.code == 2, r.err
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("error: ")
    assert message in r.err
    with pytest.raises((ModelCodeError, CheckpointError)):
        load_user_model(path, ModelCode.parse(target.format(dir=code_dir), args))


def test_syntax_error_in_user_file(tmp_path, cli):
    (tmp_path / "bad.py").write_text("def f(:\n")
    torch.save({"w": torch.zeros(2, 2)}, tmp_path / "ck.pth")
    r = cli("info", tmp_path / "ck.pth", "--model-code", f"{tmp_path}/bad.py:f")
    assert r.code == 2 and "importing" in r.err and "SyntaxError" in r.err


def test_flags_that_belong_to_inference_are_refused_with_code(code_dir, cli):
    path = _save(code_dir, _siren(code_dir))
    r = cli("info", path, "--model-code", f"{code_dir}/models.py:Siren", "--activation", "sine")
    assert r.code == 2 and "--activation" in r.err
    r = cli("info", path, "--model-args", "{}")
    assert r.code == 2 and "only with --model-code" in r.err


def test_info_json_names_the_code_and_every_tensor(code_dir, cli):
    path = _save(code_dir, _siren(code_dir), wrap=lambda sd: {"model_state": sd, "psnr": torch.tensor(30.0)})
    r = cli("info", path, "--model-code", f"{code_dir}/models.py:Siren", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["model_code"]["target"].endswith("models.py:Siren")
    assert d["class"] == "Siren"
    assert [row["name"] for row in d["layers"]] == ["net.0.linear", "net.1.linear", "net.2.linear", "net.3"]
    assert d["unused_tensors"] == ["psnr"]  # outside the 'model_state' entry: listed, not used
    r = cli("info", path, "--model-code", f"{code_dir}/models.py:Siren")
    assert r.code == 0 and "your code" in r.out


def test_nothing_is_imported_without_the_flag(code_dir, cli):
    # A file whose import would leave a mark: without --model-code it is never run.
    (code_dir / "marker.py").write_text(f"open({str(code_dir / 'ran')!r}, 'w').close()\n")
    path = _save(code_dir, _siren(code_dir))
    cli("info", path)
    assert not (code_dir / "ran").exists()


SKIP = textwrap.dedent(
    """
    import torch
    from torch import nn

    class NerfMLP(nn.Module):
        '''A NeRF-style MLP: the coordinates are concatenated back in before layer 2.'''

        def __init__(self, width=16):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, width), nn.Linear(width, width),
                                         nn.Linear(width + 2, width), nn.Linear(width, 1)])

        def forward(self, x):
            h = torch.relu(self.layers[0](x))
            h = torch.relu(self.layers[1](h))
            h = torch.relu(self.layers[2](torch.cat([h, x], dim=-1)))
            return self.layers[3](h)
    """
)


def _nerf(tmp_path):
    """The NerfMLP class, written to tmp_path/nerf.py and imported the way --model-code imports it."""
    from inrdiag.models.usercode import resolve_callable

    (tmp_path / "nerf.py").write_text(SKIP)
    return resolve_callable(ModelCode(f"{tmp_path}/nerf.py:NerfMLP"))


def test_every_diagnostic_runs_on_the_users_module(tmp_path, cli):
    """A skip-connection MLP no key layout describes: through --model-code, rank/ntk/check give the same
    numbers as the Python API on the module itself."""
    import json

    import inrdiag

    torch.manual_seed(3)
    module = _nerf(tmp_path)().eval()
    path = tmp_path / "nerf.pth"
    torch.save(module.state_dict(), path)
    code = ["--model-code", f"{tmp_path}/nerf.py:NerfMLP", "--in-features", "2"]
    r = cli("rank", path, "--grid", "12", "--json", *code)
    assert r.code == 0, r.err
    want = json.loads(json.dumps(inrdiag.rank_report(module, grid=12, in_features=2).to_dict()))
    got = r.json()
    assert [layer["name"] for layer in got["layers"]] == ["layers.0", "layers.1", "layers.2", "layers.3"]
    for g, w in zip(got["layers"], want["layers"]):
        assert_close(g["weight_stable_rank"], w["weight_stable_rank"], torch.float64, "eig")
        if w["representation"] is not None:
            sv = w["representation"]["singular_values"]
            assert_close(g["representation"]["singular_values"], sv, torch.float64, "eig")
    r = cli("ntk", path, "--points", "40", "--json", "--dtype", "float64", *code)  # float64 vs float64
    assert r.code == 0, r.err
    ref = inrdiag.ntk_report(module, points=40, in_features=2)
    assert_close(r.json()["eigenvalues"][0], ref.eigenvalues[0], torch.float64, "eig")
    r = cli("check", path, "--grid", "12", "--min-inlet-effective-rank-fraction", "0.01", "--json", *code)
    assert r.code == 0, r.err
    import imageio.v3 as iio
    import numpy as np

    img = tmp_path / "t.png"
    iio.imwrite(img, (np.random.default_rng(0).random((10, 10)) * 255).astype(np.uint8))
    sae = ["--atoms", "16", "--k", "2", "--steps", "5", "--batch-size", "32"]
    r = cli("sae", path, "--layer", "2", "--target", img, *sae, "--json", *code)  # layer 2: read after the concat
    assert r.code == 0, r.err
    d = r.json()
    assert d["layer_name"] == "layers.2" and d["width"] == 16 and d["metrics"]["model"] is not None
    # Without the code, the chain of linear layers does not describe this function: refused.
    r = cli("info", path, "--activation", "relu")
    assert r.code == 2


def test_reinit_with_model_code_changes_only_the_first_linear(tmp_path, cli):

    import inrdiag
    from inrdiag.models.inits import rank_expand_points, rank_expand_weights

    torch.manual_seed(4)
    module = _nerf(tmp_path)().eval()
    src = tmp_path / "nerf.pth"
    torch.save({"model_state": module.state_dict()}, src)
    out = tmp_path / "re.safetensors"
    code = ["--model-code", f"{tmp_path}/nerf.py:NerfMLP"]
    r = cli("reinit", src, "--scheme", "rank-expand", "-o", out, *code, "--json")
    assert r.code == 0, r.err
    assert any("threshold activation" in n for n in r.json()["notes"])
    back = load_user_model(out, ModelCode.parse(f"{tmp_path}/nerf.py:NerfMLP"))
    W, b = rank_expand_weights(rank_expand_points(16, 2))
    new, old = back.model.state_dict(), module.state_dict()
    assert_close(new["layers.0.weight"], W.float(), torch.float32)
    assert_close(new["layers.0.bias"], b.float(), torch.float32)
    assert all(torch.equal(new[k], old[k]) for k in old if not k.startswith("layers.0."))
    # the inlet's rank rises as the scheme promises (on this 16-wide layer: most units alive and distinct)
    rank = inrdiag.rank_report(back.model, grid=32, in_features=2).layers[0].representation.numerical_rank
    assert rank >= 12
    r = cli("reinit", src, "--scheme", "pe", "-o", tmp_path / "x.safetensors", *code)
    assert r.code == 2 and "allowed default, rank-expand, siren" in r.err


def test_fit_with_model_code(tmp_path, cli):
    """fit TARGET --model-code: the user's module trained as built (or with a re-initialised inlet), saved in
    its own key names; the saved file loads back through the same code and scores the same."""
    import imageio.v3 as iio
    import numpy as np

    import inrdiag

    (tmp_path / "nerf.py").write_text(SKIP)
    img = tmp_path / "t.png"
    iio.imwrite(img, (np.random.default_rng(1).random((10, 10)) * 255).astype(np.uint8))
    out = tmp_path / "fitted.safetensors"
    code = ["--model-code", f"{tmp_path}/nerf.py:NerfMLP", "--model-args", '{"width": 12}']
    r = cli("fit", img, "--steps", "30", "--lr", "1e-2", "-o", out, "--json", *code)
    assert r.code == 0, r.err
    d = r.json()
    assert d["config"]["init"] == "keep" and any("as its code built it" in n for n in d["notes"])
    back = load_user_model(out, ModelCode.parse(f"{tmp_path}/nerf.py:NerfMLP", '{"width": 12}'))
    tgt = inrdiag.load_target(img)
    with torch.no_grad():
        pred = back.model(tgt.coords(dtype=torch.float32)).clamp(0, 1)
    mse = float(((pred - tgt.values) ** 2).mean())
    assert_close(-10 * np.log10(mse), d["metric"], torch.float32)
    r = cli("fit", img, "--steps", "5", "--init", "rank-expand", "--json", *code)
    assert r.code == 0, r.err
    assert any("re-initialised the inlet layers.0" in n for n in r.json()["notes"])
    r = cli("fit", img, "--steps", "5", "--init", "pe", *code)
    assert r.code == 2 and "allowed keep, default, rank-expand, siren" in r.err
    r = cli("fit", img, "--steps", "5", "--model-args", "{}")
    assert r.code == 2 and "only with --model-code" in r.err


def test_compare_with_model_code(tmp_path, cli):
    """compare TARGET --model-code: a fresh module of the user's class per (init, seed), seeded builds."""
    import imageio.v3 as iio
    import numpy as np

    (tmp_path / "nerf.py").write_text(SKIP)
    img = tmp_path / "t.png"
    iio.imwrite(img, (np.random.default_rng(2).random((8, 8)) * 255).astype(np.uint8))
    code = ["--model-code", f"{tmp_path}/nerf.py:NerfMLP", "--model-args", '{"width": 8}']
    args = ["compare", img, "--inits", "keep,rank-expand", "--seeds", "2", "--steps", "10", "--json", *code]
    r = cli(*args)
    assert r.code == 0, r.err
    rows = {row["init"]: row for row in r.json()["rows"]}
    assert set(rows) == {"keep", "rank-expand"} and rows["keep"]["seeds"] == [0, 1]
    ranks = rows["keep"]["inlet_effective_rank"]
    assert ranks[0] != ranks[1]  # two seeds, two inits of the module
    again = cli(*args)

    def numbers(res):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in res.json()["rows"]]

    assert numbers(again) == numbers(r)  # seeded: the same numbers (timings aside)
    r = cli("compare", img, "--inits", "keep,pe", "--seeds", "1", "--steps", "2", *code)
    assert r.code == 2 and "allowed keep, default, rank-expand, siren" in r.err
    r = cli("compare", tmp_path, "--inits", "keep", "--seeds", "1", *code)
    assert r.code == 2 and "not a folder" in r.err
