"""Checkpoints saved by re-implementations of public INR codebases, loaded back and compared.

Each ``Ref*`` module below is written here from the codebase's public forward code (the file is
named in its docstring); it keeps that codebase's module names, so its ``state_dict()`` has the
same keys, and it is saved the way that codebase's training script saves it. ``inrdiag.load``
must then compute the same function (to float32 rounding: tests/tolerances.py), or refuse with the flag
that decides.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tolerances import assert_close
from torch import nn

import inrdiag
from inrdiag.errors import AmbiguousArchitectureError, CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def coords(d=2, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g) * 2 - 1


def same(loaded, ref, x=None):
    """The loaded model computes the reference's function: float32 rounding of the same operations
    (``tolerances``' "exact" kind, absolute part relative to max |f|, at least 1e-3)."""
    x = coords(loaded.spec.in_features) if x is None else x
    with torch.no_grad():
        got, want = loaded.model(x), ref(x)
    assert_close(got, want, want.dtype, scale=max(float(want.abs().max()), 1e-3))


def randomize(module, std=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.is_complex():
                p.copy_(torch.randn(p.shape, generator=g) * std / max(1, p.shape[-1]) ** 0.5)
    return module.eval()


# ------------------------------------------------------------------ official SIREN (vsitzmann/siren)
class Sine30(nn.Module):
    def forward(self, x):
        return torch.sin(30 * x)


NLS = {"sine": Sine30, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "selu": nn.SELU,
       "softplus": nn.Softplus, "elu": nn.ELU}  # fmt: skip


class RefPosEncodingNeRF(nn.Module):
    """vsitzmann/siren modules.py PosEncodingNeRF.forward: x, then for each frequency i and each
    coordinate j: sin(2^i pi x_j), cos(2^i pi x_j)."""

    def __init__(self, d, L):
        super().__init__()
        self.d, self.L = d, L

    def forward(self, x):
        out = x
        for i in range(self.L):
            for j in range(self.d):
                c = x[..., j]
                out = torch.cat(
                    (out, torch.sin((2**i) * np.pi * c)[..., None], torch.cos((2**i) * np.pi * c)[..., None]), -1
                )
        return out


class RefFCBlock(nn.Module):
    """vsitzmann/siren modules.py FCBlock: net = Sequential of Sequential(BatchLinear, nl); the last
    without nl when outermost_linear."""

    def __init__(self, d, width, hidden_layers, out, nl, outermost_linear=True):
        super().__init__()
        act = NLS[nl]
        layers = [nn.Sequential(nn.Linear(d, width), act())]
        layers += [nn.Sequential(nn.Linear(width, width), act()) for _ in range(hidden_layers)]
        layers.append(
            nn.Sequential(nn.Linear(width, out)) if outermost_linear else nn.Sequential(nn.Linear(width, out), act())
        )
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class RefSingleBVPNet(nn.Module):
    """vsitzmann/siren modules.py SingleBVPNet(type=..., mode='mlp'|'nerf'): FCBlock(outermost_linear=True)."""

    def __init__(self, type="sine", d=2, width=32, hidden_layers=2, out=1, L=None):
        super().__init__()
        self.pe = RefPosEncodingNeRF(d, L) if L else None
        n_in = d + 2 * d * L if L else d
        self.net = RefFCBlock(n_in, width, hidden_layers, out, type, outermost_linear=True)

    def forward(self, x):
        return self.net(self.pe(x) if self.pe else x)


@pytest.mark.parametrize("nl", ["sine", "relu", "tanh", "sigmoid", "selu", "softplus", "elu"])
def test_siren_official_all_nonlinearities_need_the_flag(tmp_path, nl, cli):
    """vsitzmann/siren modules.py: FCBlock writes net.net.{i}.0 for all 7 nonlinearities; training.py
    saves model.state_dict() as model_final.pth. Refused without --activation, exact with it."""
    ref = randomize(RefSingleBVPNet(nl), std=0.3 if nl == "sine" else 1.0)
    torch.save(ref.state_dict(), tmp_path / "model_final.pth")
    with pytest.raises(AmbiguousArchitectureError, match="--activation"):
        inrdiag.load(tmp_path / "model_final.pth")
    r = cli("info", tmp_path / "model_final.pth")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "--activation" in r.err and "--model-code" in r.err
    loaded = inrdiag.load(tmp_path / "model_final.pth", activation=nl)
    assert loaded.spec.out_activation == "none" and "SingleBVPNet" in loaded.sources["out_activation"]
    if nl == "sine":
        assert (loaded.spec.w0, loaded.spec.w0_hidden) == (30.0, 30.0)
        assert "sin(30 x)" in loaded.sources["w0"]
    same(loaded, ref)


def test_siren_official_nerf_mode_uses_posencodingnerf(tmp_path):
    """vsitzmann/siren modules.py SingleBVPNet(mode='nerf') -> PosEncodingNeRF (interleaved sin/cos)."""
    ref = randomize(RefSingleBVPNet("relu", d=2, L=3))
    torch.save(ref.state_dict(), tmp_path / "m.pth")
    with pytest.raises(AmbiguousArchitectureError, match="--encoding positional"):
        inrdiag.load(tmp_path / "m.pth", activation="relu")
    loaded = inrdiag.load(tmp_path / "m.pth", activation="relu", encoding="positional", frequencies=3)
    assert loaded.spec.pe_convention == "nerf-siren" and "PosEncodingNeRF" in loaded.sources["pe_convention"]
    same(loaded, ref)


def test_bare_fcblock_is_not_the_official_layout(tmp_path):
    """A bare FCBlock (net.{i}.0, default outermost_linear=False) is not SingleBVPNet: nothing is fixed."""
    ref = randomize(RefFCBlock(2, 16, 1, 1, "tanh", outermost_linear=False))
    torch.save(ref.state_dict(), tmp_path / "fc.pth")
    with pytest.raises(AmbiguousArchitectureError, match="--out-activation"):
        inrdiag.load(tmp_path / "fc.pth", activation="tanh")
    same(inrdiag.load(tmp_path / "fc.pth", activation="tanh", out_activation="tanh"), ref)


# ------------------------------------------------------------------ net.{i}.linear: notebook, FINER, WIRE
class RefSineLayer(nn.Module):
    """explore_siren.ipynb / FINER models.py / WIRE modules/siren.py SineLayer: sin(omega_0 * linear(x))."""

    def __init__(self, n_in, n_out, omega_0=30.0):
        super().__init__()
        self.omega_0 = omega_0
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x):
        return torch.sin(self.omega_0 * self.linear(x))


class RefFinerLayer(RefSineLayer):
    """FINER models.py FinerLayer: sin(omega_0 * (|h| + 1) * h), the scale without gradient."""

    def forward(self, x):
        h = self.linear(x)
        with torch.no_grad():
            scale = torch.abs(h) + 1
        return torch.sin(self.omega_0 * scale * h)


class RefGaussLayer(RefSineLayer):
    """FINER models.py / WIRE modules/gauss.py GaussLayer: exp(-(scale * linear(x))^2)."""

    def forward(self, x):
        return torch.exp(-((self.omega_0 * self.linear(x)) ** 2))


class RefReLULayer(RefSineLayer):
    """WIRE modules/relu.py ReLULayer: relu(linear(x))."""

    def forward(self, x):
        return torch.relu(self.linear(x))


class RefNetLinear(nn.Module):
    """explore_siren.ipynb Siren / FINER Siren, Finer, Gauss / WIRE INR: net = Sequential(layer, ..., last),
    last = nn.Linear (outermost_linear=True) or one more layer of the same class with hidden_omega_0."""

    def __init__(self, layer, d=2, width=32, hidden_layers=2, out=1, first=30.0, hidden=30.0, outermost_linear=True):
        super().__init__()
        net = [layer(d, width, first)] + [layer(width, width, hidden) for _ in range(hidden_layers)]
        net.append(nn.Linear(width, out) if outermost_linear else layer(width, out, hidden))
        self.net = nn.Sequential(*net)

    def forward(self, x):
        return self.net(x)


def siren_init(model):
    """Weights of a SIREN's size (uniform +-sqrt(6/n)/30; first layer +-1/n)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, p in enumerate(p for p in model.parameters() if p.ndim == 2):
            n = p.shape[1]
            bound = 1 / n if k == 0 else math.sqrt(6 / n) / 30
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
    return model.eval()


@pytest.mark.parametrize("outermost_linear", [True, False])
def test_siren_notebook(tmp_path, outermost_linear):
    """vsitzmann/siren explore_siren.ipynb Siren(outermost_linear=False) by default: the last SineLayer
    puts a sine on the output (keys net.{L}.linear); net.{L} is a plain nn.Linear."""
    ref = siren_init(RefNetLinear(RefSineLayer, outermost_linear=outermost_linear))
    torch.save(ref.state_dict(), tmp_path / "siren.pt")
    with pytest.raises(AmbiguousArchitectureError, match="--activation") as exc:
        inrdiag.load(tmp_path / "siren.pt")
    assert "FINER" in str(exc.value) and "WIRE" in str(exc.value)
    loaded = inrdiag.load(tmp_path / "siren.pt", activation="sine")
    assert loaded.spec.out_activation == ("none" if outermost_linear else "sine")
    assert loaded.sources["out_activation"].startswith("layout rule")
    same(loaded, ref)


class RefFinerTrain:
    """liuzhen0212/FINER train_image.py: torch.save({'train_iter', 'train_psnr', 'pred_img',
    'model_state': model.state_dict(), 'total_time'}, 'outputs_00.pt')."""

    @staticmethod
    def save(model, path):
        torch.save({"train_iter": [10, 20], "train_psnr": [20.5, 25.1], "pred_img": torch.zeros(4, 4, 3),
                    "model_state": model.state_dict(), "total_time": 1.5}, path)  # fmt: skip


@pytest.mark.parametrize("layer,act", [(RefSineLayer, "sine"), (RefFinerLayer, "finer"), (RefGaussLayer, "gauss")])
def test_finer_model_state_needs_the_activation(tmp_path, layer, act):
    """FINER models.py Siren/Finer/Gauss all write net.{i}.linear + net.{L}; train_image.py wraps every
    model type in {'model_state': ...} (default --model_type siren). Its defaults fix w0 = 30 (and the
    Gauss scale = 30), so only the activation is asked."""
    ref = RefNetLinear(layer, out=3)
    ref = siren_init(ref) if act != "gauss" else randomize(ref, std=0.05)
    RefFinerTrain.save(ref, tmp_path / "outputs_00.pt")
    with pytest.raises(AmbiguousArchitectureError, match="siren.*finer.*gauss"):
        inrdiag.load(tmp_path / "outputs_00.pt")
    loaded = inrdiag.load(tmp_path / "outputs_00.pt", activation=act)
    assert loaded.layout.startswith("finer train_image.py") and "train_image.py" in loaded.sources["w0"]
    same(loaded, ref)
    unused = {t.key for t in loaded.tensors if not t.used}
    assert {"pred_img", "total_time"} <= unused and not any(k.startswith("model_state") for k in unused)


class RefFinerPE(nn.Module):
    """FINER models.py PositionalEncoding: [x, sin(2^k x), cos(2^k x)]_k (freq_bands = 2**linspace(0, N-1, N))."""

    def __init__(self, N):
        super().__init__()
        self.freq_bands = 2 ** torch.linspace(0, N - 1, N)

    def forward(self, x):
        out = [x]
        for f in self.freq_bands:
            out += [torch.sin(f * x), torch.cos(f * x)]
        return torch.cat(out, -1)


class RefPEMLP(nn.Module):
    """FINER models.py PEMLP: enconding + net = Sequential(Linear, ReLU, ..., Linear) (keys net.{2k})."""

    def __init__(self, N=4, width=32, hidden_layers=2, out=3):
        super().__init__()
        self.enconding = RefFinerPE(N)
        net = [nn.Linear(2 * (2 * N + 1), width), nn.ReLU(True)]
        for _ in range(hidden_layers):
            net += [nn.Linear(width, width), nn.ReLU(True)]
        net.append(nn.Linear(width, out))
        self.net = nn.Sequential(*net)

    def forward(self, x):
        return self.net(self.enconding(x))


def test_finer_pemlp_loads_without_flags(tmp_path):
    """FINER train_image.py --model_type pemlp: PEMLP (relu, FINER's no-pi encoding, in_features=2)."""
    ref = randomize(RefPEMLP(N=4))
    RefFinerTrain.save(ref, tmp_path / "outputs_00.pt")
    loaded = inrdiag.load(tmp_path / "outputs_00.pt")
    assert loaded.spec.encoding == "positional" and loaded.spec.pe_convention == "finer"
    assert loaded.spec.frequencies == 4 and loaded.sources["activation"].startswith("layout rule")
    same(loaded, ref)


class RefComplexGaborLayer(nn.Module):
    """WIRE modules/wire.py / FINER models.py ComplexGaborLayer: complex linear (first layer real),
    omega_0 and scale_0 parameters, exp(1j omega h - |scale h|^2)."""

    def __init__(self, n_in, n_out, is_first=False):
        super().__init__()
        self.omega_0 = nn.Parameter(10.0 * torch.ones(1), False)
        self.scale_0 = nn.Parameter(10.0 * torch.ones(1), False)
        self.linear = nn.Linear(n_in, n_out, dtype=torch.float if is_first else torch.cfloat)


class RefWire(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(RefComplexGaborLayer(2, 8, True), RefComplexGaborLayer(8, 8),
                                 nn.Linear(8, 3, dtype=torch.cfloat))  # fmt: skip


@pytest.mark.parametrize("finer", [False, True])
def test_wire_complex_gabor_is_refused(tmp_path, finer, cli):
    """WIRE modules/wire.py INR (and FINER's Wire): complex weights are refused, never cast to real."""
    model = RefWire()
    if finer:
        RefFinerTrain.save(model, tmp_path / "w.pt")
    else:
        torch.save(model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="complex.*--model-code"):
        inrdiag.load(tmp_path / "w.pt", activation="sine")
    r = cli("info", tmp_path / "w.pt", "--activation", "sine")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "complex" in r.err


@pytest.mark.parametrize("layer,act,w0", [(RefSineLayer, "sine", None), (RefGaussLayer, "gauss", 10.0),
                                          (RefReLULayer, "relu", None)])  # fmt: skip
@pytest.mark.parametrize("outermost_linear", [True, False])
def test_wire_inrs(tmp_path, layer, act, w0, outermost_linear):
    """WIRE modules/siren.py, gauss.py (scale=10 by default), relu.py INR(outermost_linear=True|False)."""
    kw = {"first": 10.0, "hidden": 10.0} if act == "gauss" else {}
    ref = RefNetLinear(layer, outermost_linear=outermost_linear, **kw)
    ref = siren_init(ref) if act == "sine" else randomize(ref, std=0.1 if act == "gauss" else 1.0)
    torch.save(ref.state_dict(), tmp_path / "inr.pt")
    flags = {"activation": act}
    if act == "gauss":
        with pytest.raises(AmbiguousArchitectureError, match="FINER Gauss: 30.*WIRE gauss: 10.*--w0"):
            inrdiag.load(tmp_path / "inr.pt", **flags)
        flags["w0"] = w0
    loaded = inrdiag.load(tmp_path / "inr.pt", **flags)
    assert loaded.spec.out_activation == ("none" if outermost_linear else act)
    same(loaded, ref)


def test_wire_posenc_relu(tmp_path):
    """WIRE modules/posenc.py PosEnc(pos_encode=True): PosEncoding = PosEncodingNeRF's formula, ReLU layers."""

    class PosEnc(nn.Module):
        def __init__(self):
            super().__init__()
            self.positional_encoding = RefPosEncodingNeRF(2, 4)
            self.net = RefNetLinear(RefReLULayer, d=18).net

        def forward(self, x):
            return self.net(self.positional_encoding(x))

    ref = randomize(PosEnc())
    torch.save(ref.state_dict(), tmp_path / "pe.pt")
    with pytest.raises(AmbiguousArchitectureError, match="--pe-convention nerf-siren.*finer.*nerfstudio.*inrdiag"):
        inrdiag.load(tmp_path / "pe.pt", activation="relu", encoding="positional", frequencies=4)
    loaded = inrdiag.load(tmp_path / "pe.pt", activation="relu", encoding="positional", frequencies=4,
                          pe_convention="nerf-siren")  # fmt: skip
    same(loaded, ref)


# ------------------------------------------------------------------ lucidrains/siren-pytorch
class RefSirenPT(nn.Module):
    """siren-pytorch siren_pytorch/siren_pytorch.py Siren: weight/bias parameters, activation Sine(w0)."""

    def __init__(self, n_in, n_out, w0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.w0 = w0
        self.activation = activation

    def forward(self, x):
        out = nn.functional.linear(x, self.weight, self.bias)
        return torch.sin(self.w0 * out) if self.activation is None else self.activation(out)


class RefSirenNet(nn.Module):
    """SirenNet(dim_in, dim_hidden, dim_out, num_layers, w0, w0_initial=30, final_activation):
    net.{i} (nn.Sequential, <= 0.0.9) or layers.{i} (nn.ModuleList, >= 0.1.0) + last_layer."""

    def __init__(self, container, w0, final_activation=None, num_layers=3, width=32):
        super().__init__()
        layers = [RefSirenPT(2 if i == 0 else width, width, 30.0 if i == 0 else w0) for i in range(num_layers)]
        setattr(self, container, nn.Sequential(*layers) if container == "net" else nn.ModuleList(layers))
        self.container = container
        self.last_layer = RefSirenPT(width, 1, w0, activation=final_activation or nn.Identity())

    def forward(self, x):
        for layer in getattr(self, self.container):
            x = layer(x)
        return self.last_layer(x)


def test_siren_pytorch_old_net_layout_needs_w0_hidden_and_output(tmp_path, cli):
    """siren-pytorch 0.0.4-0.0.9 (net.{i} + last_layer): hidden w0 default 30 in 0.0.4, 0.0.6-0.0.8 and 1
    in 0.0.5, 0.0.9 (PyPI sdists read); final_activation is not stored. One error names both flags."""
    ref = siren_init(RefSirenNet("net", w0=30.0))
    torch.save(ref.state_dict(), tmp_path / "sp.pt")
    with pytest.raises(AmbiguousArchitectureError) as exc:
        inrdiag.load(tmp_path / "sp.pt")
    assert "--w0-hidden" in str(exc.value) and "--out-activation" in str(exc.value)
    r = cli("info", tmp_path / "sp.pt")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    loaded = inrdiag.load(tmp_path / "sp.pt", w0_hidden=30.0, out_activation="none")
    assert loaded.spec.w0 == 30.0 and "w0_initial=30" in loaded.sources["w0"]
    same(loaded, ref)


def test_siren_pytorch_new_layers_layout_fixes_w0(tmp_path):
    """siren-pytorch >= 0.1.0 (layers.{i} + last_layer): SirenNet(w0=1, w0_initial=30) by default; the
    README's final_activation=nn.Sigmoid() must be said with --out-activation."""
    ref = siren_init(RefSirenNet("layers", w0=1.0, final_activation=nn.Sigmoid()))
    torch.save(ref.state_dict(), tmp_path / "sp.pt")
    with pytest.raises(AmbiguousArchitectureError, match="Sigmoid.*--out-activation") as exc:
        inrdiag.load(tmp_path / "sp.pt")
    assert "--w0-hidden" not in str(exc.value)
    loaded = inrdiag.load(tmp_path / "sp.pt", out_activation="sigmoid")
    assert (loaded.spec.w0, loaded.spec.w0_hidden) == (30.0, 1.0) and ">= 0.1.0" in loaded.sources["w0_hidden"]
    same(loaded, ref)


def test_siren_pytorch_wrapper_grid_is_accounted_and_modulator_refused(tmp_path):
    """siren-pytorch SirenWrapper: net = SirenNet, a 'grid' buffer (h*w x 2); latent_dim adds modulator.layers."""

    class Wrapper(nn.Module):
        def __init__(self, latent=False):
            super().__init__()
            self.net = RefSirenNet("layers", w0=1.0)
            self.register_buffer("grid", torch.zeros(16, 2))
            if latent:
                self.modulator = nn.Module()
                self.modulator.layers = nn.ModuleList([nn.Sequential(nn.Linear(40, 32), nn.ReLU()) for _ in range(3)])

    w = Wrapper()
    siren_init(w.net)
    torch.save(w.state_dict(), tmp_path / "w.pt")
    loaded = inrdiag.load(tmp_path / "w.pt", out_activation="none")
    assert "SirenWrapper" in {t.key: t for t in loaded.tensors}["grid"].role
    same(loaded, w.net)
    torch.save(Wrapper(latent=True).state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="modulator.*--model-code"):
        inrdiag.load(tmp_path / "m.pt", out_activation="none")


# ------------------------------------------------------------------ nerfstudio
class RefNeRFEncoding(nn.Module):
    """nerfstudio field_components/encodings.py NeRFEncoding.pytorch_fwd: s = 2 pi x[..., None] * 2^linspace(min, max, L),
    flattened coordinate-major; sin([s, s + pi/2]); x appended when include_input."""

    def __init__(self, L, lo, hi, include_input):
        super().__init__()
        self.L, self.lo, self.hi, self.inc = L, lo, hi, include_input

    def forward(self, x):
        s = (2 * torch.pi * x)[..., None] * 2 ** torch.linspace(self.lo, self.hi, self.L)
        s = s.view(*s.shape[:-2], -1)
        enc = torch.sin(torch.cat([s, s + torch.pi / 2.0], dim=-1))
        return torch.cat([enc, x], dim=-1) if self.inc else enc


class RefRFFEncoding(nn.Module):
    """nerfstudio encodings.py RFFEncoding: b_matrix (in_dim x num_frequencies) buffer; s = 2 pi x @ b_matrix;
    sin([s, s + pi/2]); x appended when include_input."""

    def __init__(self, d, m, scale, include_input):
        super().__init__()
        self.register_buffer("b_matrix", torch.randn(d, m) * scale)
        self.inc = include_input

    def forward(self, x):
        s = (2 * torch.pi * x) @ self.b_matrix
        enc = torch.sin(torch.cat([s, s + torch.pi / 2.0], dim=-1))
        return torch.cat([enc, x], dim=-1) if self.inc else enc


class RefNSMLP(nn.Module):
    """nerfstudio field_components/mlp.py MLP: layers = ModuleList of nn.Linear, activation between,
    optional out_activation, skip_connections concatenate the input again."""

    def __init__(self, in_dim, num_layers=4, width=32, out=3, skip=(), out_activation=None):
        super().__init__()
        self.skip = set(skip)
        dims = [in_dim] + [width + (in_dim if i in self.skip else 0) for i in range(1, num_layers)]
        self.layers = nn.ModuleList(
            [nn.Linear(dims[i], width) for i in range(num_layers - 1)] + [nn.Linear(width, out)]
        )
        self.out_activation = out_activation

    def forward(self, x):
        inp = x
        for i, layer in enumerate(self.layers):
            if i in self.skip:
                x = torch.cat([inp, x], -1)
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return self.out_activation(x) if self.out_activation else x


class RefField(nn.Module):
    def __init__(self, enc, mlp):
        super().__init__()
        self.position_encoding, self.mlp_base = enc, mlp

    def forward(self, x):
        return self.mlp_base(self.position_encoding(x))


def save_nerfstudio(field, path):
    """nerfstudio engine/trainer.py save_checkpoint: {'step', 'pipeline': pipeline.state_dict(), 'optimizers', ...}."""
    sd = {f"_model.field.{k}": v for k, v in field.state_dict().items()}
    torch.save({"step": 100, "pipeline": sd, "optimizers": {"fields": {"state": {0: {"exp_avg": torch.zeros(3, 3)}}}},
                "scalers": {}}, path)  # fmt: skip


@pytest.mark.parametrize("include_input", [False, True])
def test_nerfstudio_rff_encoding(tmp_path, include_input):
    """nerfstudio RFFEncoding(include_input=True) is [sin, cos, x]: it loads (it used to be refused)."""
    d, m = 3, 8
    enc = RefRFFEncoding(d, m, 2.0, include_input)
    field = RefField(enc, RefNSMLP(2 * m + (d if include_input else 0))).eval()
    randomize(field.mlp_base)
    save_nerfstudio(field, tmp_path / "step-000000100.ckpt")
    with pytest.raises(AmbiguousArchitectureError, match="nerfstudio.*--activation"):
        inrdiag.load(tmp_path / "step-000000100.ckpt")
    loaded = inrdiag.load(tmp_path / "step-000000100.ckpt", activation="relu", out_activation="none")
    assert loaded.spec.ff_convention == "nerfstudio" and loaded.spec.ff_include_input == include_input
    same(loaded, field, coords(3))


def test_nerfstudio_nerf_encoding(tmp_path):
    """nerfstudio NeRFEncoding(in_dim=3, num_frequencies=10, min_freq_exp=0, max_freq_exp=8, include_input=True)."""
    field = RefField(RefNeRFEncoding(10, 0.0, 8.0, True), RefNSMLP(3 * 21)).eval()
    randomize(field.mlp_base)
    save_nerfstudio(field, tmp_path / "s.ckpt")
    base = dict(activation="relu", out_activation="none", encoding="positional", frequencies=10)
    with pytest.raises(AmbiguousArchitectureError, match="--pe-convention"):
        inrdiag.load(tmp_path / "s.ckpt", **base)
    with pytest.raises(AmbiguousArchitectureError, match="--pe-min-exp"):
        inrdiag.load(tmp_path / "s.ckpt", pe_convention="nerfstudio", **base)
    loaded = inrdiag.load(tmp_path / "s.ckpt", pe_convention="nerfstudio", pe_min_exp=0, pe_max_exp=8, **base)
    assert loaded.spec.include_input
    same(loaded, field, coords(3))


def test_nerfstudio_skip_connection_is_named(tmp_path, cli):
    """nerfstudio MLP(skip_connections=(2,)) is not a chain: the error says skip connection, --model-code."""
    mlp = randomize(RefNSMLP(3, num_layers=4, skip=(2,)))
    torch.save(mlp.state_dict(), tmp_path / "skip.pt")
    with pytest.raises(CheckpointError, match="skip connection.*--model-code"):
        inrdiag.load(tmp_path / "skip.pt", activation="relu", out_activation="none")
    r = cli("info", tmp_path / "skip.pt", "--activation", "relu")
    assert r.code == 2 and "skip connection" in r.err and len(r.err.strip().splitlines()) == 1


# ------------------------------------------------------------------ alpine (kushalvyas/alpine)
class RefAlpineFFN(nn.Module):
    """alpine/models/ffn.py FFN: PosEncoding with a B parameter (m x d), [sin(2 pi x B^T), cos(2 pi x B^T)],
    registered as self.pos_encode and as self.model[0]; model = ModuleList(PosEncoding, Linear, ReLU, ..., Linear)."""

    def __init__(self, d=2, m=16, width=32, hidden_layers=3, out=1):
        super().__init__()
        self.pos_encode = nn.Module()
        self.pos_encode.B = nn.Parameter(torch.randn(m, d) * 3.0, requires_grad=False)
        self.model = nn.ModuleList([self.pos_encode, nn.Linear(2 * m, width), nn.ReLU()])
        for _ in range(hidden_layers - 2):
            self.model.extend([nn.Linear(width, width), nn.ReLU()])
        self.model.append(nn.Linear(width, out))

    def forward(self, x):
        B = self.pos_encode.B
        h = torch.cat([torch.sin(2.0 * torch.pi * x @ B.T), torch.cos(2.0 * torch.pi * x @ B.T)], dim=-1)
        for layer in list(self.model)[1:]:
            h = layer(h)
        return h


@pytest.mark.parametrize("lightning", [False, True])
def test_alpine_ffn_one_matrix_under_two_names(tmp_path, lightning):
    """alpine FFN's B is in the state dict twice (pos_encode.B, model.0.B): one matrix, not 'several fit';
    alpine/trainers/pl.py wraps the model in Lightning (state_dict.model.*)."""
    ref = randomize(RefAlpineFFN())
    with torch.no_grad():
        ref.pos_encode.B.normal_(0, 3.0)
    sd = ref.state_dict()
    assert "pos_encode.B" in sd and "model.0.B" in sd
    obj = {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 1} if lightning else sd
    torch.save(obj, tmp_path / "ffn.ckpt")
    loaded = inrdiag.load(tmp_path / "ffn.ckpt")
    assert loaded.layout.startswith("alpine FFN") and loaded.spec.encoding == "fourier"
    roles = {t.key.split("model.", 1)[-1] if lightning else t.key: t for t in loaded.tensors}
    assert all(t.used or "same Fourier matrix" in t.role or t.role.startswith("skipped") for t in loaded.tensors)
    assert roles  # every tensor is listed
    same(loaded, ref)


def test_alpine_strainer_cohort_needs_flags(tmp_path):
    """alpine/models/strainer.py Strainer: encoder = ModuleList(Linear, Sine(30), ...), decoder.{d} =
    ModuleList(Linear, Sine, ..., Linear). encoder/decoder keys are generic: activation and output are asked."""

    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(30.0 * x)

    class Strainer(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.ModuleList([nn.Linear(2, 32), Sine(), nn.Linear(32, 32), Sine()])
            self.decoder = nn.ModuleList(
                [nn.ModuleList([nn.Linear(32, 32), Sine(), nn.Linear(32, 1)]) for _ in range(3)]
            )

        def head(self, d):
            def f(x):
                for layer in [*self.encoder, *self.decoder[d]]:
                    x = layer(x)
                return x

            return f

    ref = siren_init(Strainer())
    torch.save(ref.state_dict(), tmp_path / "strainer.pt")
    with pytest.raises(AmbiguousArchitectureError, match="--activation.*--out-activation"):
        inrdiag.load(tmp_path / "strainer.pt")
    for d in (0, 2):
        loaded = inrdiag.load(tmp_path / "strainer.pt", activation="sine", w0=30, out_activation="none", head=d)
        assert loaded.shared_layers == 2 and loaded.heads == 3
        same(loaded, ref.head(d))


def test_plain_sequential_and_batchnorm(tmp_path):
    """Plain nn.Sequential(Linear, BatchNorm1d, ReLU, Linear, ReLU, Linear): torch.save(state_dict())."""
    ref = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    randomize(ref)
    with torch.no_grad():
        ref[1].running_mean.uniform_(-0.2, 0.2)
        ref[1].running_var.uniform_(0.5, 2)
    torch.save(ref.state_dict(), tmp_path / "seq.pt")
    with pytest.raises(AmbiguousArchitectureError, match="--activation.*--out-activation"):
        inrdiag.load(tmp_path / "seq.pt")
    loaded = inrdiag.load(tmp_path / "seq.pt", activation="relu", out_activation="none")
    assert loaded.spec.batchnorm == [0] and "running statistics" in loaded.sources["batchnorm"]
    same(loaded, ref)


def test_info_json_has_a_source_for_every_property(tmp_path, cli):
    ref = siren_init(RefNetLinear(RefSineLayer, outermost_linear=False))
    torch.save(ref.state_dict(), tmp_path / "s.pt")
    r = cli("info", tmp_path / "s.pt", "--activation", "sine", "--json")
    assert r.code == 0
    src = r.json()["sources"]
    for key in ("activation", "w0", "w0_hidden", "out_activation", "encoding", "bias", "batchnorm", "shapes"):
        assert key in src, key
    assert src["activation"] == "flag --activation" and src["out_activation"].startswith("layout rule")
    r = cli("info", tmp_path / "s.pt", "--activation", "sine")
    assert "output     sine" in r.out and "layout rule" in r.out
