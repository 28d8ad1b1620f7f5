"""Error bars that decide: bootstrap intervals for a corpus WER and a paired bootstrap test between two models.

A test set of a few dozen clips moves by several WER points between two runs that differ only in noise, so a
difference is only called a regression when it is both larger than the recipe's threshold and significant here.

Both resample utterances (with replacement, seeded: the same inputs give the same interval). The corpus WER of a
resample is its summed word errors over its summed reference words, as for the whole set. The paired test resamples
the same utterance indices for both models (Koehn's paired bootstrap; the matched-pair idea of sclite's MAPSSWE:
each utterance is compared with itself), so what differs between utterances cancels out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SAMPLES = 1000  # resamples: the 2.5 % / 97.5 % percentiles move by well under a point at this count
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A corpus WER (percent) and its bootstrap confidence interval."""

    wer: float
    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class PairedTest:
    """Model B minus model A on the same utterances, in WER points (positive: B is worse)."""

    delta: float
    low: float
    high: float
    p_value: float  # two-sided: how often a resample puts the difference on the other side of zero (x2)
    confidence: float

    @property
    def worse(self) -> bool:
        """B significantly worse than A: the whole interval of the difference lies above zero."""
        return self.low > 0.0

    @property
    def better(self) -> bool:
        return self.high < 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significantly_worse": self.worse, "significantly_better": self.better}


def counts(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(word errors, reference words) per scored utterance of per-utterance rows (empty references skipped)."""
    scored = [r for r in rows if r.get("words")]
    return (np.array([r["errors"] for r in scored], dtype=np.int64),
            np.array([r["words"] for r in scored], dtype=np.int64))


def _indices(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _wer(errors: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Corpus WER in percent along the last axis (0 when a resample has no reference words)."""
    total = words.sum(axis=-1)
    return 100.0 * errors.sum(axis=-1) / np.maximum(total, 1)


def bootstrap_interval(errors: np.ndarray, words: np.ndarray, samples: int = SAMPLES, seed: int = SEED,
                       confidence: float = 0.95) -> Interval:
    """The corpus WER and its percentile bootstrap interval over utterances."""
    errors, words = np.asarray(errors), np.asarray(words)
    point = float(_wer(errors, words)) if len(words) else float("nan")
    if len(words) == 0:
        return Interval(point, float("nan"), float("nan"), confidence)
    idx = _indices(len(words), samples, seed)
    low, high = _percentiles(_wer(errors[idx], words[idx]), confidence)
    return Interval(point, low, high, confidence)


def paired_bootstrap(errors_a: np.ndarray, errors_b: np.ndarray, words: np.ndarray, samples: int = SAMPLES,
                     seed: int = SEED, confidence: float = 0.95) -> PairedTest:
    """WER(B) - WER(A) on the same utterances with its interval and a two-sided p-value."""
    errors_a, errors_b, words = np.asarray(errors_a), np.asarray(errors_b), np.asarray(words)
    if not (len(errors_a) == len(errors_b) == len(words)):
        raise ValueError(f"paired test needs the same utterances: {len(errors_a)}, {len(errors_b)}, {len(words)}")
    if len(words) == 0:
        return PairedTest(0.0, 0.0, 0.0, 1.0, confidence)
    delta = float(_wer(errors_b, words) - _wer(errors_a, words))
    idx = _indices(len(words), samples, seed)
    resampled = _wer(errors_b[idx], words[idx]) - _wer(errors_a[idx], words[idx])
    low, high = _percentiles(resampled, confidence)
    # Share of resamples on each side of zero; a tie (no difference at all) counts for both sides.
    p_value = min(1.0, 2.0 * min(float(np.mean(resampled <= 0)), float(np.mean(resampled >= 0))))
    return PairedTest(delta, low, high, p_value, confidence)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - confidence) / 2
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def compare_rows(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], samples: int = SAMPLES,
                 seed: int = SEED, confidence: float = 0.95) -> PairedTest:
    """Paired test of two models' per-utterance rows on one set (same order, same references)."""
    errors_a, words = counts(rows_a)
    errors_b, words_b = counts(rows_b)
    if not np.array_equal(words, words_b):
        raise ValueError("the two models were scored on different references; a paired test needs the same ones")
    return paired_bootstrap(errors_a, errors_b, words, samples, seed, confidence)


def interval_of(rows: list[dict[str, Any]], samples: int = SAMPLES, seed: int = SEED,
                confidence: float = 0.95) -> Interval:
    return bootstrap_interval(*counts(rows), samples=samples, seed=seed, confidence=confidence)
