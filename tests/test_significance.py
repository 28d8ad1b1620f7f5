"""Error bars: bootstrap intervals and the paired bootstrap test, pinned on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.significance import bootstrap_interval, compare_rows, counts, paired_bootstrap


def test_two_utterances_one_wrong_give_the_full_range() -> None:
    # Resampling 2 utterances, one all wrong and one all right (1 word each): a resample holds 0, 1 or 2 wrong ones
    # with probabilities 1/4, 1/2, 1/4, so WER is 0, 50 or 100 % and the 2.5 / 97.5 % percentiles are 0 and 100.
    interval = bootstrap_interval(np.array([1, 0]), np.array([1, 1]), samples=1000, seed=0)
    assert interval.wer == 50.0 and (interval.low, interval.high) == (0.0, 100.0)


def test_equal_rates_everywhere_give_a_point_interval_and_words_weight_the_wer() -> None:
    interval = bootstrap_interval(np.array([1, 2, 3]), np.array([2, 4, 6]), samples=200, seed=3)
    assert (interval.wer, interval.low, interval.high) == (50.0, 50.0, 50.0)
    # corpus WER = summed errors / summed words (6 / 12), not the mean of per-utterance rates
    assert bootstrap_interval(np.array([1, 0]), np.array([1, 3]), samples=100).wer == 25.0


def test_the_seed_fixes_the_interval() -> None:
    rng = np.random.default_rng(1)
    errors, words = rng.integers(0, 4, 50), rng.integers(4, 12, 50)
    first, again = (bootstrap_interval(errors, words, seed=5) for _ in range(2))
    assert first == again
    assert first.low < first.wer < first.high
    assert bootstrap_interval(errors, words, seed=6) != first


def test_identical_models_differ_by_nothing() -> None:
    errors, words = np.array([1, 0, 2, 1]), np.array([3, 2, 4, 5])
    test = paired_bootstrap(errors, errors, words)
    assert (test.delta, test.low, test.high, test.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not test.worse and not test.better


def test_worse_on_every_utterance_is_significant() -> None:
    words = np.full(30, 5)
    test = paired_bootstrap(np.zeros(30, int), np.ones(30, int), words)
    assert test.delta == pytest.approx(20.0) and test.worse and test.p_value == 0.0
    assert test.low == pytest.approx(20.0) and test.high == pytest.approx(20.0)


def test_one_worse_utterance_out_of_two_is_noise() -> None:
    # B adds one error on utterance 0 only. Resamples: {0,0} +100, {0,1} or {1,0} +50, {1,1} 0: a quarter of them
    # show no difference, so the two-sided p-value is about 2 x 1/4 and the interval reaches 0.
    test = paired_bootstrap(np.array([0, 0]), np.array([1, 0]), np.array([1, 1]), samples=4000, seed=0)
    assert test.delta == 50.0 and test.low == 0.0 and test.high == 100.0
    assert 0.4 < test.p_value < 0.6 and not test.worse


def test_pairing_cancels_what_differs_between_utterances() -> None:
    # Utterance difficulty varies a lot, but B is one error worse everywhere: unpaired intervals overlap, the paired
    # test still sees it.
    rng = np.random.default_rng(0)
    words = np.full(40, 10)
    a = rng.integers(0, 8, 40)
    b = a + 1
    ia, ib = bootstrap_interval(a, words), bootstrap_interval(b, words)
    assert ia.high > ib.low  # overlapping intervals
    assert paired_bootstrap(a, b, words).worse


def test_rows_skip_empty_references_and_must_match() -> None:
    rows_a = [{"errors": 1, "words": 2}, {"errors": 3, "words": 0}, {"errors": 0, "words": 4}]
    rows_b = [{"errors": 2, "words": 2}, {"errors": 0, "words": 0}, {"errors": 0, "words": 4}]
    errors, words = counts(rows_a)
    assert errors.tolist() == [1, 0] and words.tolist() == [2, 4]
    assert compare_rows(rows_a, rows_b).delta == pytest.approx(100 / 6)
    with pytest.raises(ValueError, match="different references"):
        compare_rows(rows_a, [{"errors": 0, "words": 3}, {"errors": 0, "words": 4}])
    with pytest.raises(ValueError, match="same utterances"):
        paired_bootstrap(np.array([1]), np.array([1, 2]), np.array([1, 1]))
