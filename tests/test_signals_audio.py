"""Audio targets: loading, crop, resample, metrics by hand, the SIREN audio preset, a .wav round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile")

from inrdiag.fitting.targets import load_target  # noqa: E402
from inrdiag.metrics import psnr  # noqa: E402
from inrdiag.signals.errors import AudioError  # noqa: E402
from inrdiag.signals.kinds import metric, snr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tone(path, rate=1000, n=200, channels=1):
    t = np.arange(n) / rate
    x = 0.5 * np.sin(2 * np.pi * 50 * t)
    data = np.stack([x * (c + 1) / channels for c in range(channels)], 1)
    sf.write(path, data, rate, subtype="PCM_16")
    return x


def test_load_mono_keeps_rate_and_values(tmp_path):
    x = tone(tmp_path / "a.wav")
    t = load_target(tmp_path / "a.wav")
    assert t.kind == "audio" and t.shape == (200,) and t.dim == 1 and t.channels == 1
    assert t.meta["sample_rate"] == 1000 and t.meta["seconds"] == pytest.approx(0.2)
    np.testing.assert_allclose(t.values[:, 0].numpy(), x, atol=1 / 32767)
    assert t.coords()[0, 0] == -1 and t.coords()[-1, 0] == 1


def test_seconds_crop_stereo_first_channel_and_resample(tmp_path):
    x = tone(tmp_path / "s.wav", channels=2)
    t = load_target(tmp_path / "s.wav", seconds=0.05)
    assert t.shape == (50,) and any("first (left) channel" in n for n in t.meta["notes"])
    np.testing.assert_allclose(t.values[:, 0].numpy(), x[:50] / 2, atol=1 / 32767)
    r = load_target(tmp_path / "s.wav", size=100)
    assert r.shape == (100,) and r.meta["effective_sample_rate"] == pytest.approx(1000 * 99 / 199)


def test_metrics_by_hand():
    y = torch.tensor([[0.5], [-0.5], [0.25], [0.0]])
    f = torch.tensor([[0.4], [-0.5], [1.5], [0.1]])  # 1.5 is clipped to 1 for audio
    mse = (0.1**2 + 0 + 0.75**2 + 0.1**2) / 4
    assert metric("audio", f, y) == pytest.approx(-10 * math.log10(mse))
    assert psnr(f, y, -1, 1) == pytest.approx(-10 * math.log10(mse))
    assert snr(f, y) == pytest.approx(10 * math.log10((0.25 + 0.25 + 0.0625) / (4 * mse)))
    assert snr(y, y) == math.inf


def test_bad_audio_is_refused(tmp_path, cli):
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 8000)
    tone(tmp_path / "eight.wav", channels=8)
    with pytest.raises(AudioError, match="0 samples"):
        load_target(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="8 channels"):
        load_target(tmp_path / "eight.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF0000WAVEjunk")
    for name, text in (("empty.wav", "0 samples"), ("eight.wav", "8 channels"), ("junk.wav", "cannot read as audio")):
        r = cli("fit", tmp_path / name, "--steps", "1")
        assert r.code == 2 and text in r.err and r.err.count("\n") == 1
    r = cli("fit", tmp_path / "eight.wav", "--seconds", "-1")
    assert r.code == 2
    r = cli("fit", ROOT / "examples" / "images" / "camera.png", "--seconds", "1")
    assert r.code == 2 and "crops audio files only" in r.err


def test_header_size_refused_before_decoding(tmp_path, monkeypatch):
    import inrdiag.fitting.targets as targets

    tone(tmp_path / "a.wav")
    monkeypatch.setattr(targets, "MAX_POINTS", 100)
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("decoded before the size check"))
    with pytest.raises(targets.TargetError, match="exceed the limit"):
        load_target(tmp_path / "a.wav")


def test_siren_audio_preset_is_sirens_recipe():
    from inrdiag.models.inits import build_model

    m = build_model("siren-audio", 1, 1, 4, 32, seed=0)
    assert m.spec.activation == "sine" and m.spec.w0 == 3000 and m.spec.w0_hidden == 30
    w0 = m.linears[0].weight.detach()
    assert float(w0.abs().max()) <= 1.0  # first layer U(-1/n_in, 1/n_in) with n_in = 1
    assert float(m.linears[1].weight.detach().abs().max()) <= math.sqrt(6 / 32) / 30 + 1e-7


def test_fit_round_trip_writes_wav_at_the_rate(tmp_path, cli):
    src = ROOT / "examples" / "signals" / "chirp.wav"
    out = tmp_path / "recon.wav"
    r = cli("fit", src, "--seconds", "0.1", "--init", "siren-audio", "--depth", "2", "--width", "32", "--steps", "20",
            "--lr", "1e-4", "--recon", out, "-o", tmp_path / "m.safetensors", "--json")  # fmt: skip
    assert r.code == 0, r.err
    data = r.json()
    assert data["target"]["kind"] == "audio" and data["target"]["shape"] == [800]
    assert data["metric_name"] == "PSNR" and math.isfinite(data["details"]["snr_db"])
    info = sf.info(str(out))
    assert info.samplerate == 8000 and info.frames == 800 and info.channels == 1
    r = cli("rank", tmp_path / "m.safetensors", "--json")  # the fitted waveform's own grid, not 4,096 points
    assert r.code == 0, r.err
    assert r.json()["grid"]["shape"] == [800]
