"""WER/CER pinned on hand-computed cases; normalized vs orthographic; empty references skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.collator import IGNORE_INDEX
from finetune.metrics import decode, error_rates, normalizer_for, score


def test_edit_counts_by_hand() -> None:
    # ref: el gato come pescado (4 words); hyp: el perro come (substitution gato->perro, deletion pescado)
    result = error_rates().compute(references=["el gato come pescado"], predictions=["el perro come"])
    assert (result["hits"], result["substitutions"], result["deletions"], result["insertions"]) == (2, 1, 1, 0)
    assert result["wer"] == pytest.approx(2 / 4)
    result = error_rates().compute(references=["hola"], predictions=["hola hola hola"])
    assert (result["insertions"], result["wer"]) == (2, pytest.approx(2.0))


def test_normalized_and_orthographic() -> None:
    _, basic = normalizer_for("es", None)
    scores = score(["¡Hola, Mundo!"], ["hola mundo"], basic)
    assert scores["wer_ortho"] == pytest.approx(100.0)  # both words differ as written (case, punctuation)
    assert scores["wer"] == pytest.approx(0.0)  # equal after Whisper's basic normalizer
    # 13 reference characters; 5 edits: ¡ , ! deleted, H->h and M->m substituted.
    assert scores["cer_ortho"] == pytest.approx(100 * 5 / 13)


def test_corpus_rate_weights_by_reference_length() -> None:
    _, basic = normalizer_for("es", None)
    scores = score(["a b c d", "e"], ["a b c d", "x"], basic)
    assert scores["wer"] == pytest.approx(100 * 1 / 5)  # not the mean of per-utterance rates (50 %)


def test_empty_references_are_skipped_and_counted() -> None:
    _, basic = normalizer_for("es", None)
    scores = score(["", "¿?", "uno dos"], ["algo", "", "uno dos"], basic)
    assert scores["empty_references"] == 2 and scores["utterances"] == 3 and scores["wer"] == 0.0


def test_normalizer_by_language() -> None:
    name, english = normalizer_for("en", None)
    assert name == "whisper-english" and english("Mr. Smith's colour") == "mister smith is colour"

    class Tokenizer:  # the real tokenizer carries the British -> American map from normalizer.json
        english_spelling_normalizer = {"colour": "color"}

    assert normalizer_for("en", Tokenizer())[1]("Mr. Smith's colour") == "mister smith is color"
    assert normalizer_for("es", None)[0] == "whisper-basic"


def test_decode_replaces_label_padding(processor) -> None:
    ids = processor.tokenizer("hola").input_ids
    padded = np.array([ids[1:] + [IGNORE_INDEX, IGNORE_INDEX]])
    assert decode(processor.tokenizer, padded) == ["hola"]
