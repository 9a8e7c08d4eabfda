"""Audio targets: a 1-D waveform on ``linspace(-1, 1, n)`` (sample i at t_i), and writing a fit back as .wav.

The file is read with soundfile (the ``audio`` extra), as float32 in [-1, 1] (full scale; no peak
normalisation, so the reconstruction plays at the original level). Mono, or the first channel of a
stereo file (noted); files with more channels are refused rather than guessed at. ``seconds`` keeps
the first S seconds; ``size`` resamples to ``size`` samples by linear interpolation (the effective
sample rate becomes ``rate * size / n``, recorded). Sizes are checked from the header before decoding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..files import atomic_write
from ..fitting.targets import Target, _check_points, file_sha256
from ..grid import check_memory
from .errors import AudioError, require
from .kinds import snr

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
#: Channels accepted: mono, or stereo (first channel used).
MAX_CHANNELS = 2


def load_audio(p: Path, size: int | None = None, seconds: float | None = None) -> Target:
    """The waveform of ``p`` as a 1-D audio Target: values (N x 1) float32 in [-1, 1] at ``linspace(-1, 1, N)``."""
    sf = require("soundfile", "audio", f"{p}: reading audio")
    try:
        info = sf.info(str(p))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError for unreadable files
        raise AudioError(f"{p}: cannot read as audio ({_first_line(exc)})") from None
    frames, channels, rate = int(info.frames), int(info.channels), int(info.samplerate)
    if frames <= 0:
        raise AudioError(f"{p}: the file holds 0 samples")
    if channels > MAX_CHANNELS:
        raise AudioError(f"{p}: {channels} channels; inrdiag fits mono or the first channel of a stereo file "
                         f"(extract one channel first, e.g. sox in.wav out.wav remix 1)")  # fmt: skip
    n = frames
    if seconds is not None:
        if not (seconds > 0 and math.isfinite(seconds)):
            raise AudioError(f"--seconds must be a positive number, got {seconds}")
        n = min(frames, max(1, int(round(seconds * rate))))
    _check_points(n if size is None else max(n, size), p)
    check_memory(4.0 * n * channels * 2, f"decoding {n:,} x {channels} samples of {p}", "--seconds")
    try:
        data, _ = sf.read(str(p), frames=n, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{p}: cannot decode ({_first_line(exc)})") from None
    x = np.ascontiguousarray(data[:, 0], dtype=np.float32)
    if x.shape[0] < 2:
        raise AudioError(f"{p}: {x.shape[0]} sample(s); at least 2 are needed")
    if not np.isfinite(x).all():
        raise AudioError(f"{p}: the waveform holds NaN/Inf samples")
    notes: list[str] = []
    if channels == 2:
        notes.append("stereo file: the first (left) channel is fitted")
    peak = float(np.abs(x).max())
    if peak > 1:
        notes.append(f"samples reach {peak:.3g}, beyond full scale [-1, 1]; PSNR clips predictions to [-1, 1]")
    eff_rate = float(rate)
    if size is not None:
        if size < 2:
            raise AudioError(f"--size must be at least 2, got {size}")
        if size != x.shape[0]:
            t_old = np.linspace(-1.0, 1.0, x.shape[0])
            x = np.interp(np.linspace(-1.0, 1.0, size), t_old, x).astype(np.float32)
            eff_rate = rate * (size - 1) / (n - 1)
            notes.append(f"resampled {n:,} -> {size:,} samples (linear); effective rate {eff_rate:.6g} Hz")
    meta = {"sample_rate": rate, "effective_sample_rate": eff_rate, "channels": channels, "frames": frames,
            "samples": int(x.shape[0]), "seconds": n / rate, "crop_seconds": seconds, "notes": notes}  # fmt: skip
    values = torch.from_numpy(x)[:, None].contiguous()
    tgt = Target("audio", str(p), file_sha256(p), (int(x.shape[0]),), values, meta=meta)

    def evaluate(model: nn.Module, out: torch.Tensor) -> dict[str, Any]:
        return {"snr_db": snr(out, tgt.values.to(out.device))}

    tgt.evaluate = evaluate
    return tgt


def write_wav(path: str, samples: npt.ArrayLike, rate: float, force: bool = False) -> None:
    """Write float samples (clipped to [-1, 1]) as 16-bit PCM at ``round(rate)`` Hz."""
    sf = require("soundfile", "audio", "writing .wav")
    data = np.clip(np.asarray(samples, dtype=np.float64).reshape(-1), -1.0, 1.0)
    sr = max(1, int(round(rate)))
    atomic_write(path, lambda tmp: sf.write(tmp, data, sr, subtype="PCM_16", format="WAV"), force)


def _first_line(exc: Exception) -> str:
    s = str(exc).strip()
    return s.splitlines()[0][:120] if s else type(exc).__name__
