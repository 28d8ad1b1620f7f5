"""Data loading: decode + resample to 16 kHz mono, filters with counted reasons, clear errors for bad sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny import tone, write_audiofolder

from finetune.data import SAMPLE_RATE, counts_table, load_data, prepare_source
from finetune.recipe import DataConfig, RecipeError, Source


def data_config(path: Path, **limits) -> DataConfig:
    src = {"path": str(path), "split": "train"}
    return DataConfig(train=[src], eval=[src], **limits)


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    rows = [
        {"name": "good.wav", "text": "hola", "audio": tone(1.0)},
        {"name": "stereo_44k.wav", "text": "buenos días", "audio": tone(2.0, rate=44_100, channels=2), "rate": 44_100},
        {"name": "low_8k.flac", "text": "adiós", "audio": tone(1.5, rate=8_000), "rate": 8_000},
        {"name": "empty_text.wav", "text": "   ", "audio": tone(1.0)},
        {"name": "corrupt.wav", "text": "roto", "bytes": b"RIFF\x00\x00 this is not audio"},
        {"name": "zero_bytes.wav", "text": "vacío", "bytes": b""},
        {"name": "too_long.wav", "text": "largo", "audio": tone(31.0)},
        {"name": "many_tokens.wav", "text": "palabra " * 300, "audio": tone(1.0)},
    ]
    write_audiofolder(tmp_path, rows)
    return tmp_path


def test_bad_rows_are_dropped_with_counted_reasons(messy: Path, processor) -> None:
    cfg = data_config(messy)
    kept, count = prepare_source(cfg.train[0], "train", processor.tokenizer, cfg)
    assert (count.rows, count.kept) == (8, 3)
    assert count.dropped == {"empty transcript": 1, "unreadable audio": 2, "longer than 30 s": 1,
                             "more than 448 label tokens": 1}
    assert sorted(kept["text"]) == ["adiós", "buenos días", "hola"]


def test_audio_is_resampled_to_16k_mono(messy: Path, processor) -> None:
    cfg = data_config(messy)
    kept, _ = prepare_source(cfg.train[0], "train", processor.tokenizer, cfg)
    by_text = {row["text"]: row for row in kept}
    for text, seconds in [("hola", 1.0), ("buenos días", 2.0), ("adiós", 1.5)]:
        wave = np.asarray(by_text[text]["waveform"])
        assert wave.ndim == 1 and abs(len(wave) - seconds * SAMPLE_RATE) <= 32, text
        assert by_text[text]["duration"] == pytest.approx(seconds, abs=2e-3)
    # Resampling keeps the tone's pitch: the 220 Hz peak stays at 220 Hz.
    spectrum = np.abs(np.fft.rfft(by_text["buenos días"]["waveform"]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(by_text["buenos días"]["waveform"]) - 220) < 2


def test_limits_come_from_the_recipe(messy: Path, processor) -> None:
    cfg = data_config(messy, max_duration_s=1.2, max_label_tokens=6)
    _, count = prepare_source(cfg.train[0], "train", processor.tokenizer, cfg)
    assert count.dropped["longer than 1.2 s"] == 3  # 2.0 s, 1.5 s and 31 s
    assert count.dropped["more than 6 label tokens"] >= 1


def test_counts_table_lists_every_reason(messy: Path, processor) -> None:
    data = load_data(data_config(messy), processor.tokenizer)
    table = counts_table(data.counts)
    assert "| train | " in table and "| eval | " in table and "unreadable audio: 2" in table


def test_missing_column_lists_the_columns_that_exist(messy: Path, processor) -> None:
    cfg = DataConfig(train=[{"path": str(messy), "text_column": "sentence"}], eval=[{"path": str(messy)}])
    with pytest.raises(RecipeError) as info:
        load_data(cfg, processor.tokenizer)
    assert "column(s) ['sentence'] not found; the dataset has ['audio', 'transcription']" in str(info.value)


def test_missing_directory_and_split(tmp_path: Path, messy: Path, processor) -> None:
    with pytest.raises(RecipeError, match="is not a directory"):
        load_data(data_config(tmp_path / "nope"), processor.tokenizer)
    cfg = DataConfig(train=[{"path": str(messy), "split": "validation"}], eval=[{"path": str(messy)}])
    with pytest.raises(RecipeError, match="could not load audiofolder"):
        load_data(cfg, processor.tokenizer)


def test_unreachable_hub_dataset_fails_fast_and_clearly(processor) -> None:
    cfg = DataConfig(train=[{"hub": "no-such-org/no-such-dataset"}], eval=[{"hub": "no-such-org/no-such-dataset"}])
    with pytest.raises(RecipeError, match="could not load Hub dataset 'no-such-org/no-such-dataset'"):
        load_data(cfg, processor.tokenizer)


def test_split_with_nothing_usable_is_an_error_with_the_table(tmp_path: Path, processor) -> None:
    write_audiofolder(tmp_path, [{"name": "a.wav", "text": "", "audio": tone(1.0)}])
    with pytest.raises(RecipeError) as info:
        load_data(data_config(tmp_path), processor.tokenizer)
    assert "no usable rows left after filtering" in str(info.value) and "empty transcript: 1" in str(info.value)


def test_source_labels() -> None:
    assert Source(hub="facebook/multilingual_librispeech", config="spanish", split="dev").label == \
        "facebook/multilingual_librispeech/spanish:dev"
    assert Source(path="/data/es-synth", split="test").label == "es-synth:test"
    assert Source(path="/x", name="mine").label == "mine"
