"""Audio in: one decoder (torchcodec through ffmpeg, 16 kHz mono float32) for dataset cells and files, the checks
that name a file that cannot be read, loudness, and training-time waveform augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from finetune.errors import UserError
from finetune.recipe import MAX_AUDIO_SECONDS, SAMPLE_RATE, AugmentConfig


class AudioError(UserError):
    """A file that cannot be transcribed; the message names the file and what to do."""


def audio_decoder(source: str | bytes):
    """torchcodec's decoder of a file's (or encoded bytes') best audio stream, resampled to 16 kHz mono."""
    from torchcodec.decoders import AudioDecoder

    return AudioDecoder(source, sample_rate=SAMPLE_RATE, num_channels=1)


def all_samples(decoder) -> np.ndarray:
    return decoder.get_all_samples().data[0].numpy().astype(np.float32, copy=False)


def _open(path: str | Path):
    """torchcodec's decoder of the file's best audio stream (16 kHz mono), or an AudioError saying why not."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        return audio_decoder(str(path))
    except ValueError as err:
        if "audio stream" in str(err):
            raise AudioError(f"{path}: has no audio stream (a video without sound?)") from None
        raise AudioError(f"{path}: cannot decode its audio ({str(err).splitlines()[0]})") from None
    except RuntimeError as err:
        why = str(err).splitlines()[0].rsplit(":", 1)[-1].replace(str(path), "").strip()
        raise AudioError(f"{path}: not an audio or video file that ffmpeg can read ({why})") from None


def probe_duration(path: str | Path) -> float:
    """Seconds of audio, from the container's metadata (nothing decoded; decodes when the header has none)."""
    duration = _open(path).metadata.duration_seconds
    return float(duration) if duration else len(load_audio(path)) / SAMPLE_RATE


def load_audio(path: str | Path) -> np.ndarray:
    """Any file ffmpeg reads (audio, or the best audio stream of a video) -> float32 mono at 16 kHz."""
    try:
        waveform = all_samples(_open(path))
    except RuntimeError as err:  # opened, but a packet would not decode
        raise AudioError(f"{path}: cannot decode its audio ({str(err).splitlines()[0]})") from None
    if waveform.size == 0:
        raise AudioError(f"{path}: the audio stream holds no samples")
    return waveform


def decode_audio(value: dict[str, Any]) -> np.ndarray:
    """An undecoded audio cell ({"path", "bytes"}) -> float32 mono waveform at 16 kHz."""
    source = value.get("bytes") or value.get("path")
    if not source:
        raise ValueError("the audio cell has neither bytes nor a path")
    return all_samples(audio_decoder(source))


def loudness_db(waveform: np.ndarray) -> float:
    """RMS level in dBFS (0 dB = full scale)."""
    return float(20 * np.log10(np.sqrt(np.mean(np.square(waveform, dtype=np.float64))) + 1e-10))


def drop_reason_for_file(audio: dict[str, Any] | None) -> str | None:
    """Why an audio cell cannot be read before trying to decode it, or None."""
    if not audio or not (audio.get("bytes") or audio.get("path")):
        return "no audio path"
    if audio.get("bytes"):
        return None
    path = Path(audio["path"])
    if path.is_dir():
        return "a directory, not an audio file"
    if not path.is_file():
        return "missing audio file"
    return "empty audio file (0 bytes)" if path.stat().st_size == 0 else None


class WaveformAugment:
    """Speed perturbation and additive white noise, drawn anew each time a training row is read.

    Uses torch's global generator, which the Trainer seeds (train.seed), so runs repeat.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "waveform": self.perturb(np.asarray(row["waveform"], dtype=np.float32))}

    def batch(self, rows: dict[str, list]) -> dict[str, list]:
        return {**rows, "waveform": [self.perturb(np.asarray(w, dtype=np.float32)) for w in rows["waveform"]]}

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * torch.rand(()).item()

    def perturb(self, waveform: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        if len(waveform) > 1 and torch.rand(()).item() < cfg.speed_prob:
            factor = self._uniform(*cfg.speed_range)  # > 1: faster and shorter (pitch moves with it, as in Kaldi)
            length = max(1, int(len(waveform) / factor))
            waveform = np.interp(np.linspace(0, len(waveform) - 1, length), np.arange(len(waveform)),
                                 waveform).astype(np.float32)
        if torch.rand(()).item() < cfg.noise_prob:
            snr_db = self._uniform(*cfg.noise_snr_db)
            noise_rms = np.sqrt(np.mean(np.square(waveform, dtype=np.float64))) / 10 ** (snr_db / 20)
            waveform = waveform + noise_rms * torch.randn(len(waveform)).numpy().astype(np.float32)
        return waveform[: int(MAX_AUDIO_SECONDS * SAMPLE_RATE)]  # slowed-down clips stay within 30 s
