"""WER and CER, orthographic (as written) and normalized (Whisper's normalizers), in percent."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import evaluate
import jiwer
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


# ---------------------------------------------------------------------------------------------------------------
# Per-utterance analysis for the reports

DURATION_BUCKETS = [(0.0, 5.0), (5.0, 10.0), (10.0, 20.0), (20.0, 30.0)]  # seconds; 30 s is Whisper's window
REPEAT_NGRAM = 3  # n of the n-grams whose repetition inside one hypothesis signals a decoding loop


def alignment(reference: str, hypothesis: str) -> dict[str, Any]:
    """Word alignment of one pair: counts and the aligned (op, ref word, hyp word) list; op in C S D I."""
    if not reference.split():
        words = hypothesis.split()
        return {"C": 0, "S": 0, "D": 0, "I": len(words), "ops": [("I", None, w) for w in words]}
    result = jiwer.process_words(reference, hypothesis)
    ref, hyp = result.references[0], result.hypotheses[0]
    ops: list[tuple[str, str | None, str | None]] = []
    for chunk in result.alignments[0]:
        if chunk.type in {"equal", "substitute"}:
            kind = "C" if chunk.type == "equal" else "S"
            ops += [(kind, r, h) for r, h in zip(ref[chunk.ref_start_idx:chunk.ref_end_idx],
                                                 hyp[chunk.hyp_start_idx:chunk.hyp_end_idx])]
        elif chunk.type == "delete":
            ops += [("D", r, None) for r in ref[chunk.ref_start_idx:chunk.ref_end_idx]]
        else:
            ops += [("I", None, h) for h in hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]]
    return {"C": result.hits, "S": result.substitutions, "D": result.deletions, "I": result.insertions, "ops": ops}


def sclite_listing(utterance_id: Any, aligned: dict[str, Any]) -> str:
    """sclite's layout: correct words lower case, errors upper case, *** where a word is missing."""
    ref_cells, hyp_cells = [], []
    for op, ref, hyp in aligned["ops"]:
        ref_word = "***" if ref is None else (ref.lower() if op == "C" else ref.upper())
        hyp_word = "***" if hyp is None else (hyp.lower() if op == "C" else hyp.upper())
        width = max(len(ref_word), len(hyp_word))
        ref_cells.append(ref_word.ljust(width))
        hyp_cells.append(hyp_word.ljust(width))
    return "\n".join([f"id: ({utterance_id})",
                      f"Scores: (#C #S #D #I) {aligned['C']} {aligned['S']} {aligned['D']} {aligned['I']}",
                      "REF:  " + " ".join(ref_cells).rstrip(), "HYP:  " + " ".join(hyp_cells).rstrip()])


def repeated_ngram_rate(hypotheses: list[str], n: int = REPEAT_NGRAM) -> float:
    """Share (%) of hypothesis n-grams that repeat an earlier n-gram of the same hypothesis ("a b a b a b": 50 %)."""
    total = repeated = 0
    for text in hypotheses:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        repeated += len(grams) - len(set(grams))
    return 100 * repeated / total if total else 0.0


def top_errors(alignments: list[dict[str, Any]], most: int = 10) -> dict[str, list[tuple[str, int]]]:
    """The most frequent substitutions ("ref -> hyp"), deletions and insertions."""
    counts: dict[str, Counter] = {"substitutions": Counter(), "deletions": Counter(), "insertions": Counter()}
    for aligned in alignments:
        for op, ref, hyp in aligned["ops"]:
            if op == "S":
                counts["substitutions"][f"{ref} -> {hyp}"] += 1
            elif op == "D":
                counts["deletions"][ref] += 1
            elif op == "I":
                counts["insertions"][hyp] += 1
    return {kind: counter.most_common(most) for kind, counter in counts.items()}


def analyse(references: list[str], hypotheses: list[str], durations: list[float], hit_max_length: list[bool],
            normalize: Callable[[str], str]) -> dict[str, Any]:
    """Every number the reports show for one model on one set, and the per-utterance rows behind them."""
    norm_refs, norm_hyps = [normalize(r) for r in references], [normalize(h) for h in hypotheses]
    aligned = [alignment(r, h) for r, h in zip(norm_refs, norm_hyps)]
    scored = [a for a, r in zip(aligned, norm_refs) if r.split()]  # empty references are skipped, and counted
    words = sum(a["C"] + a["S"] + a["D"] for a in scored)
    buckets = []
    for low, high in DURATION_BUCKETS:
        inside = [i for i, d in enumerate(durations) if low <= d < high or (high == DURATION_BUCKETS[-1][1] == d)]
        inside = [i for i in inside if norm_refs[i].split()]
        if inside:
            rates = _rates([norm_refs[i] for i in inside], [norm_hyps[i] for i in inside])
            buckets.append({"seconds": [low, high], "utterances": len(inside), "wer": 100 * rates["wer"]})
    per_utterance = [
        {"id": i, "ref": ref, "hyp": hyp, "duration": round(d, 3),
         "wer": 100 * (a["S"] + a["D"] + a["I"]) / max(1, a["C"] + a["S"] + a["D"]) if nr.split() else None,
         # normalized word errors and reference words: what the bootstrap resamples (finetune/significance.py)
         "errors": a["S"] + a["D"] + a["I"], "words": a["C"] + a["S"] + a["D"] if nr.split() else 0}
        for i, (ref, hyp, d, a, nr) in enumerate(zip(references, hypotheses, durations, aligned, norm_refs))
    ]
    n = len(references)
    return {
        **score(references, hypotheses, normalize),
        "hits": sum(a["C"] for a in scored), "substitutions": sum(a["S"] for a in scored),
        "deletions": sum(a["D"] for a in scored), "insertions": sum(a["I"] for a in scored),
        "reference_words": words,
        "empty_output_rate": 100 * sum(not h.split() for h in norm_hyps) / n if n else 0.0,
        "insertion_rate": 100 * sum(a["I"] for a in scored) / words if words else 0.0,
        "repeated_ngram_rate": repeated_ngram_rate(norm_hyps),
        "max_length_rate": 100 * sum(hit_max_length) / n if n else 0.0,
        "wer_by_duration": buckets,
        "_utterances": per_utterance, "_alignments": aligned,
    }
