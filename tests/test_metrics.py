"""WER/CER pinned on hand-computed cases; normalized vs orthographic; empty references skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.collator import IGNORE_INDEX
from finetune.metrics import (alignment, analyse, decode, error_rates, normalizer_for, repeated_ngram_rate, score,
                              sclite_listing, top_errors)


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


def test_alignment_and_sclite_listing_by_hand() -> None:
    aligned = alignment("el gato come pescado", "el perro come y pescado")
    assert (aligned["C"], aligned["S"], aligned["D"], aligned["I"]) == (3, 1, 0, 1)
    assert sclite_listing(7, aligned) == ("id: (7)\n"
                                          "Scores: (#C #S #D #I) 3 1 0 1\n"
                                          "REF:  el GATO  come *** pescado\n"
                                          "HYP:  el PERRO come Y   pescado")
    deleted = alignment("uno dos tres", "uno tres")
    assert deleted["ops"] == [("C", "uno", "uno"), ("D", "dos", None), ("C", "tres", "tres")]
    assert sclite_listing(1, deleted).splitlines()[2:] == ["REF:  uno DOS tres", "HYP:  uno *** tres"]


def test_repeated_ngrams_and_top_errors() -> None:
    assert repeated_ngram_rate(["a b a b a b"]) == pytest.approx(50.0)  # aba bab aba bab: 2 of 4 repeat
    assert repeated_ngram_rate(["uno dos tres cuatro", "hola"]) == 0.0
    errors = top_errors([alignment("a b c", "a x c"), alignment("a b c", "a x"), alignment("a", "a z")])
    assert errors == {"substitutions": [("b -> x", 2)], "deletions": [("c", 1)], "insertions": [("z", 1)]}


def test_analyse_counts_every_signal() -> None:
    _, basic = normalizer_for("es", None)
    refs = ["Hola mundo.", "uno dos tres", "", "cuatro cinco"]
    hyps = ["hola mundo", "uno uno uno uno uno", "algo", ""]
    result = analyse(refs, hyps, [2.0, 7.5, 1.0, 12.0], [False, True, False, False], basic)
    assert result["empty_references"] == 1 and result["reference_words"] == 7
    assert (result["hits"], result["substitutions"], result["deletions"], result["insertions"]) == (3, 2, 2, 2)
    assert result["wer"] == pytest.approx(100 * 6 / 7)
    assert result["insertion_rate"] == pytest.approx(100 * 2 / 7)
    assert result["empty_output_rate"] == pytest.approx(25.0) and result["max_length_rate"] == pytest.approx(25.0)
    assert result["repeated_ngram_rate"] == pytest.approx(100 * 2 / 3)  # "uno uno uno" three times: 2 repeats
    assert [(b["seconds"], b["utterances"], round(b["wer"], 2)) for b in result["wer_by_duration"]] == [
        ([0.0, 5.0], 1, 0.0), ([5.0, 10.0], 1, 133.33), ([10.0, 20.0], 1, 100.0)]  # 1 C, 2 S, 2 I of 3 words
    assert [u["wer"] for u in result["_utterances"]] == [0.0, pytest.approx(400 / 3), None, 100.0]
