"""Training windows (finetune/packing.py): the plan's limits, the exact label ids of a packed window, the loss mask
of a prompt, and features of a packed window equal to the feature extractor's on the concatenated audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_recipe
from tiny import tone, write_audiofolder

from finetune.collator import IGNORE_INDEX, SpeechCollator
from finetune.audio import decode_audio
from finetune.data import load_data
from finetune.model import load_processor
from finetune.packing import SpecialTokens, TrainingWindows, concatenate, plan_windows, window_labels
from finetune.recipe import SAMPLE_RATE, validate


def random_clips(n: int, seed: int = 0) -> tuple[list[float], list[int], list[str]]:
    rng = np.random.default_rng(seed)
    durations = rng.uniform(0.5, 12.0, n).tolist() + [29.5]  # one clip nearly a whole window
    tokens = rng.integers(3, 120, n).tolist() + [300]
    languages = rng.choice(["es", "en", "fr"], n).tolist() + ["es"]
    return durations, tokens, languages


@pytest.mark.parametrize("gap_s,stretch", [(0.0, 1.0), (0.5, 1.0), (0.2, 1.0 / 0.9)])
def test_windows_stay_within_30_s_and_448_tokens_and_one_language(gap_s, stretch) -> None:
    durations, tokens, languages = random_clips(300)
    windows = plan_windows(durations, tokens, languages, seed=3, epoch=0, max_window_s=30.0, gap_s=gap_s,
                           stretch=stretch)
    assert sorted(i for w in windows for i in w) == list(range(len(durations))), "every clip exactly once"
    for window in windows:
        seconds = sum(durations[i] * stretch for i in window) + gap_s * (len(window) - 1)
        assert seconds <= 30.0 + 1e-9 or len(window) == 1
        assert 4 + sum(tokens[i] for i in window) <= 448
        assert len({languages[i] for i in window}) == 1
    assert max(len(w) for w in windows) > 3, "short clips were packed"


def test_a_clip_longer_than_the_window_stays_alone() -> None:
    windows = plan_windows([2.0, 25.0, 3.0], [5, 5, 5], ["es"] * 3, seed=0, epoch=0, max_window_s=20.0, gap_s=0.0)
    assert [1] in windows and sorted(map(len, windows)) == [1, 2]


def test_the_plan_is_deterministic_per_seed_and_epoch() -> None:
    durations, tokens, languages = random_clips(100)
    plan = lambda seed, epoch: plan_windows(durations, tokens, languages, seed=seed, epoch=epoch,  # noqa: E731
                                            max_window_s=30.0, gap_s=0.0)
    assert plan(1, 0) == plan(1, 0)
    assert plan(1, 0) != plan(2, 0)
    assert plan(1, 0) != plan(1, 1)


def test_two_clip_window_label_ids_exact(timestamp_processor) -> None:
    """<|startofprev|> prev <|sot|><|es|><|transcribe|><|0.00|> one<|1.24|><|1.74|> two<|3.00|><|endoftext|>, and
    the collator's labels are the next tokens with the prompt and <|startoftranscript|> itself left out."""
    tok = timestamp_processor.tokenizer
    ids, text = tok.convert_tokens_to_ids, lambda s: tok(s, add_special_tokens=False).input_ids
    special = SpecialTokens.of(tok, ["es"], "transcribe")
    sequence, prompt_length = window_labels([text(" hola"), text(" adiós")], [(0.0, 1.234), (1.734, 3.0)], "es",
                                            special, timestamps=True, prompt=text(" antes"))
    expected = ([ids("<|startofprev|>"), *text(" antes"), ids("<|startoftranscript|>"), ids("<|es|>"),
                 ids("<|transcribe|>"), ids("<|0.00|>"), *text(" hola"), ids("<|1.24|>"), ids("<|1.74|>"),
                 *text(" adiós"), ids("<|3.00|>"), ids("<|endoftext|>")])
    assert sequence == expected
    assert prompt_length == 1 + len(text(" antes"))

    batch = SpeechCollator(timestamp_processor, ids("<|startoftranscript|>"))(
        [{"waveform": tone(3.0), "labels": sequence, "prompt_length": prompt_length, "language": "es"},
         {"waveform": tone(1.0), "labels": sequence[prompt_length:], "prompt_length": 0, "language": "es"}])
    inputs, labels = batch["decoder_input_ids"], batch["labels"]
    assert inputs[0].tolist() == expected[:-1]
    assert labels[0].tolist() == [IGNORE_INDEX] * prompt_length + expected[prompt_length + 1:]
    # Without a prompt: what the plain path trains on (the model's right shift puts <|startoftranscript|> first).
    body = expected[prompt_length:]
    assert inputs[1, :len(body) - 1].tolist() == body[:-1]
    assert labels[1].tolist() == body[1:] + [IGNORE_INDEX] * (labels.shape[1] - len(body) + 1)
    assert inputs[1, len(body) - 1:].eq(tok.pad_token_id).all()


def test_without_timestamps_the_texts_are_joined(timestamp_processor) -> None:
    tok = timestamp_processor.tokenizer
    ids = tok.convert_tokens_to_ids
    special = SpecialTokens.of(tok, ["es"], "transcribe")
    joined = tok("hola adiós", add_special_tokens=False).input_ids
    sequence, prompt_length = window_labels([[1], [2]], [(0, 1), (1, 2)], "es", special, timestamps=False,
                                            join=lambda: joined)
    assert prompt_length == 0
    assert sequence == [ids("<|startoftranscript|>"), ids("<|es|>"), ids("<|transcribe|>"), ids("<|notimestamps|>"),
                        *joined, ids("<|endoftext|>")]


def test_a_long_prompt_keeps_its_last_tokens_within_448(timestamp_processor) -> None:
    special = SpecialTokens.of(timestamp_processor.tokenizer, ["es"], "transcribe")
    sequence, prompt_length = window_labels([[7] * 300], [(0.0, 20.0)], "es", special, timestamps=True,
                                            prompt=list(range(1000, 1400)))
    assert len(sequence) - 1 == 448  # decoder positions: all of them, no more
    assert sequence[1:prompt_length] == list(range(1400 - (prompt_length - 1), 1400))
    too_long, _ = window_labels([[7] * 444], [(0.0, 20.0)], "es", special, timestamps=True, join=lambda: [7] * 444)
    assert too_long[3] == special.no_timestamps and len(too_long) - 1 <= 448, "timestamps that do not fit are left out"


def test_concatenate_places_clips_with_gaps() -> None:
    waveform, bounds = concatenate([np.ones(16_000, np.float32), np.ones(8_000, np.float32)], gap_s=0.5)
    assert len(waveform) == 16_000 + 8_000 + 8_000
    assert bounds == [(0.0, 1.0), (1.5, 2.0)]
    assert not waveform[16_000:24_000].any()


@pytest.fixture(scope="module")
def packed_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    rows = [{"name": f"{i}.wav", "text": f"frase número {i}", "audio": tone(1.0 + 0.25 * i, freq=200 + 30 * i, seed=i)}
            for i in range(10)]
    write_audiofolder(root, rows, "train")
    write_audiofolder(root, rows[:2], "validation")
    return root


def windows_of(tmp_path, model_dir, corpus, **windows) -> tuple[TrainingWindows, object]:
    raw = tiny_recipe(model_dir, corpus, tmp_path / "out")
    raw["data"] = {**raw["data"], "test": [], "windows": {"mode": "packed", "max_window_s": 8.0, **windows}}
    recipe = validate(raw)
    processor = load_processor(recipe.model)
    data = load_data(recipe.data, processor, seed=recipe.train.seed)
    assert isinstance(data.train, TrainingWindows)
    return data.train, processor


def test_packed_window_features_equal_the_extractor_on_the_concatenated_audio(tmp_path, timestamp_model_dir,
                                                                              packed_corpus) -> None:
    windows, processor = windows_of(tmp_path, timestamp_model_dir, packed_corpus, gap_s=0.25)
    number = max(range(len(windows)), key=lambda n: len(windows.windows[n]))
    item = windows[number]
    assert item["clips"] >= 2 and len(item["waveform"]) <= 8.0 * SAMPLE_RATE + 1
    files = [packed_corpus / "train" / f"{i}.wav" for i in windows.windows[number]]
    audio, _ = concatenate([decode_audio({"path": str(f)}) for f in files], 0.25)
    expected = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    batch = SpeechCollator(processor, 0)([item])
    assert torch.equal(batch["input_features"], expected)
    assert item["duration"] == pytest.approx(len(audio) / SAMPLE_RATE - 0.25 * (item["clips"] - 1), abs=1e-3)


def test_windows_are_redrawn_each_epoch_and_probabilities_hold(tmp_path, timestamp_model_dir, packed_corpus) -> None:
    windows, _ = windows_of(tmp_path, timestamp_model_dir, packed_corpus, timestamp_probability=1.0,
                            prompt_probability=0.0)
    first = windows.windows
    windows.set_epoch(1)
    assert windows.windows != first and sorted(i for w in windows.windows for i in w) == list(range(10))
    timestamp_zero = windows.special.time_zero
    assert all(windows[n]["labels"][3] == timestamp_zero and windows[n]["prompt_length"] == 0
               for n in range(len(windows)))
    windows, _ = windows_of(tmp_path, timestamp_model_dir, packed_corpus, timestamp_probability=0.0,
                            prompt_probability=1.0)
    items = [windows[n] for n in range(len(windows))]
    no_timestamps = windows.special.no_timestamps
    assert all(item["labels"][item["prompt_length"] + 3] == no_timestamps for item in items)
    assert sum(item["prompt_length"] > 0 for item in items) == len(items) - 1, "all but the first have a prompt"
