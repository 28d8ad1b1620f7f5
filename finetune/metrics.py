"""WER and CER, orthographic (as written) and normalized (Whisper's normalizers), in percent."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import evaluate
import numpy as np
from transformers import EvalPrediction
from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

from finetune.collator import IGNORE_INDEX

METRIC_DIR = Path(__file__).parent / "metric_modules" / "error_rates"


@lru_cache(maxsize=1)
def error_rates() -> evaluate.EvaluationModule:
    # keep_in_memory: no cache files, so several processes scoring at once never contend for a lock.
    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)


def normalizer_for(language: str, tokenizer: Any) -> tuple[str, Callable[[str], str]]:
    """Whisper's English normalizer for English (with the tokenizer's spelling map), its basic one otherwise."""
    if language == "en":
        return "whisper-english", EnglishTextNormalizer(getattr(tokenizer, "english_spelling_normalizer", None) or {})
    return "whisper-basic", BasicTextNormalizer()


def _rates(references: list[str], predictions: list[str]) -> dict[str, Any]:
    """Corpus WER/CER over the pairs whose reference is not empty (jiwer cannot score an empty reference)."""
    pairs = [(r, p) for r, p in zip(references, predictions) if r.strip()]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan"), "scored": 0}
    refs, hyps = zip(*pairs)
    result = error_rates().compute(references=list(refs), predictions=list(hyps))
    return {**result, "scored": len(pairs)}


def score(references: list[str], predictions: list[str], normalize: Callable[[str], str]) -> dict[str, float]:
    """WER/CER in percent: `wer`/`cer` on normalized text, `wer_ortho`/`cer_ortho` as written."""
    ortho = _rates(references, predictions)
    norm = _rates([normalize(r) for r in references], [normalize(p) for p in predictions])
    return {
        "wer": 100 * norm["wer"],
        "cer": 100 * norm["cer"],
        "wer_ortho": 100 * ortho["wer"],
        "cer_ortho": 100 * ortho["cer"],
        "utterances": len(references),
        "empty_references": len(references) - norm["scored"],  # skipped: empty after normalization
    }


def decode(tokenizer: Any, ids: np.ndarray) -> list[str]:
    """Token ids (label padding -100 allowed) -> text without special tokens."""
    ids = np.where(ids == IGNORE_INDEX, tokenizer.pad_token_id, ids)
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def compute_metrics_fn(tokenizer: Any, language: str) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's compute_metrics: generated ids vs label ids -> WER/CER (keys become eval_wer, ...)."""
    _, normalize = normalizer_for(language, tokenizer)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predictions = decode(tokenizer, prediction.predictions)
        references = decode(tokenizer, prediction.label_ids)
        return score(references, predictions, normalize)

    return compute_metrics
