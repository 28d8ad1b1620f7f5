"""Data loading: decode + resample to 16 kHz mono, filters with counted reasons, clear errors for bad sources."""

from __future__ import annotations

import json
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import IterableDataset
from tiny import tone, write_audiofolder

from finetune.data import load_data
from finetune.data_counts import counts_table, save_data_report
from finetune.recipe import SAMPLE_RATE
from finetune.rows import prepare_source
from finetune.collator import SpeechCollator
from finetune.recipe import AugmentConfig, DataConfig, RecipeError, Source


def data_config(path: Path, **limits) -> DataConfig:
    """One source as train and eval (and so as the test set); test-set losses allowed: these tests are about the
    training filters (test_a_test_set_that_lost_rows_... checks the limit)."""
    src = {"path": str(path), "split": "train"}
    return DataConfig(train=[src], eval=[src], **{"max_test_dropped": 1.0, **limits})


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
    kept, count = prepare_source(cfg.train[0], "train", processor, cfg, store_features=False)
    assert (count.rows, count.kept) == (8, 3)
    assert count.dropped == {"empty transcript": 1, "unreadable audio": 1, "empty audio file (0 bytes)": 1,
                             "longer than 30 s": 1, "more than 448 label tokens": 1}
    by_reason = {row["reason"]: row for row in count.dropped_rows}
    assert by_reason["unreadable audio"]["audio"].endswith("corrupt.wav")
    assert by_reason["empty transcript"]["row"] == 3 and by_reason["empty transcript"]["split"] == "train"
    assert sorted(kept["text"]) == ["adiós", "buenos días", "hola"]


def test_audio_is_resampled_to_16k_mono(messy: Path, processor) -> None:
    cfg = data_config(messy)
    kept, _ = prepare_source(cfg.train[0], "train", processor, cfg, store_features=False)
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
    _, count = prepare_source(cfg.train[0], "train", processor, cfg, store_features=False)
    assert count.dropped["longer than 1.2 s"] == 3  # 2.0 s, 1.5 s and 31 s
    assert count.dropped["more than 6 label tokens"] >= 1


def test_counts_table_lists_every_reason(messy: Path, processor) -> None:
    data = load_data(data_config(messy), processor)
    table = counts_table(data.counts)
    assert "| train | " in table and "| eval | " in table and "unreadable audio: 1" in table


def test_missing_column_lists_the_columns_that_exist(messy: Path, processor) -> None:
    cfg = DataConfig(train=[{"path": str(messy), "text_column": "sentence"}], eval=[{"path": str(messy)}])
    with pytest.raises(RecipeError) as info:
        load_data(cfg, processor)
    assert "column(s) ['sentence'] not found; the dataset has ['audio', 'transcription']" in str(info.value)


def test_missing_directory_and_split(tmp_path: Path, messy: Path, processor) -> None:
    with pytest.raises(RecipeError, match="is not a directory"):
        load_data(data_config(tmp_path / "nope"), processor)
    cfg = DataConfig(train=[{"path": str(messy), "split": "validation"}], eval=[{"path": str(messy)}])
    with pytest.raises(RecipeError, match="could not load audiofolder"):
        load_data(cfg, processor)


def test_unreachable_hub_dataset_fails_fast_and_clearly(processor) -> None:
    cfg = DataConfig(train=[{"hub": "no-such-org/no-such-dataset"}], eval=[{"hub": "no-such-org/no-such-dataset"}])
    with pytest.raises(RecipeError, match="could not load Hub dataset 'no-such-org/no-such-dataset'"):
        load_data(cfg, processor)


def test_split_with_nothing_usable_is_an_error_with_the_table(tmp_path: Path, processor) -> None:
    write_audiofolder(tmp_path, [{"name": "a.wav", "text": "", "audio": tone(1.0)}])
    with pytest.raises(RecipeError) as info:
        load_data(data_config(tmp_path), processor)
    assert "no usable rows left after filtering" in str(info.value) and "empty transcript: 1" in str(info.value)


def test_source_labels() -> None:
    assert Source(hub="facebook/multilingual_librispeech", config="spanish", split="dev").label == \
        "facebook/multilingual_librispeech/spanish:dev"
    assert Source(path="/data/es-synth", split="test").label == "es-synth:test"
    assert Source(path="/x", name="mine").label == "mine"


def ffmpeg(out: Path, *inputs: str) -> Path:
    """Encode a 2 s 440 Hz tone (plus a video stream for video containers) with Debian's ffmpeg."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=44100",
                    *inputs, "-shortest", str(out)], check=True)
    return out


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg (scripts/setup.sh)")
VIDEO = ["-f", "lavfi", "-i", "color=c=black:s=64x64:d=2", "-map", "1:v", "-map", "0:a"]


@needs_ffmpeg
def test_manifests_with_relative_paths_and_any_format(tmp_path: Path, processor) -> None:
    media = tmp_path / "media"
    media.mkdir()
    files = [ffmpeg(media / "a.mp3"), ffmpeg(media / "b.ogg", "-c:a", "libopus"), ffmpeg(media / "c.m4a"),
             ffmpeg(media / "d.mp4", *VIDEO), ffmpeg(media / "e.mkv", *VIDEO), ffmpeg(media / "f.webm", *VIDEO)]
    names = [f"media/{f.name}" for f in files]
    (tmp_path / "clips.csv").write_text("path,sentence\n" + "".join(f"{n},frase {i}\n" for i, n in enumerate(names)))
    (tmp_path / "clips.tsv").write_text("path\tsentence\n" + "".join(f"{n}\tfrase {i}\n" for i, n in enumerate(names)))
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps({"file": str(tmp_path / n), "text": f"frase {i}"}) + "\n"
                                                  for i, n in enumerate(names)))
    sources = [{"manifest": str(tmp_path / "clips.csv"), "audio_column": "path", "text_column": "sentence"},
               {"manifest": str(tmp_path / "clips.tsv"), "audio_column": "path", "text_column": "sentence"},
               {"manifest": str(tmp_path / "clips.jsonl"), "audio_column": "file", "text_column": "text"}]
    data = load_data(DataConfig(train=sources, eval=sources[:1]), processor)
    assert [(c.source, c.rows, c.kept) for c in data.counts[:3]] == [("clips.csv", 6, 6), ("clips.tsv", 6, 6),
                                                                      ("clips.jsonl", 6, 6)]
    assert all(abs(d - 2.0) < 0.05 for d in data.train["duration"]), data.train["duration"]


def test_manifest_problems(tmp_path: Path, processor) -> None:
    write_audiofolder(tmp_path, [{"name": "ok.wav", "text": "hola", "audio": tone(1.0)}])
    (tmp_path / "m.csv").write_text("audio,transcription\ntrain/ok.wav,hola\ntrain/gone.wav,adiós\n,sin audio\n")
    cfg = DataConfig(train=[{"manifest": str(tmp_path / "m.csv")}], eval=[{"manifest": str(tmp_path / "m.csv")}],
                     max_test_dropped=1.0)
    data = load_data(cfg, processor)
    assert data.counts[0].dropped == {"missing audio file": 1, "no audio path": 1} and data.counts[0].kept == 1
    (tmp_path / "latin1.csv").write_bytes("audio,transcription\ntrain/ok.wav,adiós\n".encode("latin-1"))
    cfg = DataConfig(train=[{"manifest": str(tmp_path / "latin1.csv")}], eval=[{"manifest": str(tmp_path / "m.csv")}])
    with pytest.raises(RecipeError, match=r"is not UTF-8 \(byte 0xf3 at offset 36\)\. Re-save it as UTF-8"):
        load_data(cfg, processor)


def test_empty_manifests_and_non_utf8_metadata_are_named(tmp_path: Path, processor) -> None:
    for name, content in [("empty.csv", ""), ("header.csv", "audio,transcription\n"), ("blank.jsonl", "\n\n")]:
        (tmp_path / name).write_text(content)
        cfg = DataConfig(train=[{"manifest": str(tmp_path / name)}], eval=[{"manifest": str(tmp_path / name)}])
        with pytest.raises(RecipeError, match=rf"manifest '.*{name}' has no rows"):
            load_data(cfg, processor)
    write_audiofolder(tmp_path / "af", [{"name": "ok.wav", "text": "hola", "audio": tone(1.0)}])
    metadata = next((tmp_path / "af").rglob("metadata.csv"))
    metadata.write_bytes(metadata.read_text().replace("hola", "adiós").encode("latin-1"))
    with pytest.raises(RecipeError, match=r"metadata.csv' is not UTF-8 \(byte 0xf3"):
        load_data(data_config(tmp_path / "af"), processor)


def test_a_test_set_that_lost_rows_warns_and_stops_above_the_limit(tmp_path: Path, processor, caplog) -> None:
    write_audiofolder(tmp_path, [{"name": f"{i}.wav", "text": "hola", "audio": tone(1.0)} for i in range(3)])
    (tmp_path / "folder.wav").mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=1:size=32x32:rate=5",
                    "-an", str(tmp_path / "video.mp4")], check=True)
    rows = ["train/0.wav,hola", "train/1.wav,hola", "folder.wav,carpeta", "video.mp4,video"]
    (tmp_path / "test.csv").write_text("audio,transcription\n" + "\n".join(rows) + "\n")
    test = {"manifest": str(tmp_path / "test.csv"), "name": "calls"}
    cfg = DataConfig(train=[{"path": str(tmp_path)}], eval=[{"path": str(tmp_path)}], test=[test])
    with pytest.raises(RecipeError, match=r"test set 'calls' lost 2 of 4 rows, more than data.max_test_dropped=0.05 "
                                          r"allows: folder.wav \(a directory, not an audio file\), video.mp4 \(no audio stream\)\. Fix "):
        load_data(cfg, processor)
    with caplog.at_level("WARNING", logger="finetune"):
        data = load_data(cfg.model_copy(update={"max_test_dropped": 0.5}), processor)
    assert len(data.test["calls"]) == 2
    assert "Test set 'calls' lost 2 of 4 rows (50 %: a directory, not an audio file: 1, no audio stream: 1); its " \
           "scores cover the 2 kept" in caplog.text


def test_per_row_and_per_source_language(tmp_path: Path, processor) -> None:
    rows = [{"name": f"{i}.wav", "text": t, "audio": tone(1.0)} for i, t in enumerate(["hola", "hello", "hallo"])]
    write_audiofolder(tmp_path, rows)
    (tmp_path / "m.csv").write_text("audio,transcription,lang\ntrain/0.wav,hola,es\ntrain/1.wav,hello,EN\n"
                                    "train/2.wav,hallo,xx\n")
    cfg = DataConfig(train=[{"manifest": str(tmp_path / "m.csv"), "language_column": "lang"},
                            {"path": str(tmp_path), "language": "german"}], eval=[{"path": str(tmp_path)}])
    data = load_data(cfg, processor)
    tok = processor.tokenizer
    assert data.counts[0].dropped == {"unknown language code 'xx'": 1}
    languages = [tok.convert_ids_to_tokens(labels[1]) for labels in data.train["labels"]]
    assert languages == ["<|es|>", "<|en|>", "<|de|>", "<|de|>", "<|de|>"]
    assert data.train["language"] == ["es", "en", "de", "de", "de"]
    assert data.eval["language"] == ["es"] * 3  # no language given: the recipe's (model.language)
    assert data.eval["labels"][0] == tok("hola").input_ids  # same ids as the tokenizer's own prefix
    batch = SpeechCollator(processor, tok.convert_tokens_to_ids("<|startoftranscript|>"))(list(data.train))
    assert batch["labels"][:, 0].tolist() == tok.convert_tokens_to_ids(["<|es|>", "<|en|>", "<|de|>", "<|de|>",
                                                                        "<|de|>"])
    assert batch["language"] == ["es", "en", "de", "de", "de"]


def test_dropped_rows_file(tmp_path: Path, messy: Path, processor) -> None:
    data = load_data(data_config(messy), processor)
    path = save_data_report(str(tmp_path / "out"), data.counts)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 15  # 5 bad rows, in train, eval and test (the test sets default to the eval sets)
    assert {r["reason"] for r in rows} == {"empty transcript", "unreadable audio", "empty audio file (0 bytes)",
                                           "longer than 30 s", "more than 448 label tokens"}


def test_cached_features_equal_features_from_the_waveform(messy: Path, processor) -> None:
    cfg = data_config(messy)
    cached, _ = prepare_source(cfg.train[0], "train", processor, cfg, store_features=True)
    raw, _ = prepare_source(cfg.train[0], "train", processor, cfg, store_features=False)
    collate = SpeechCollator(processor, decoder_start_token_id=0)
    rows_cached, rows_raw = [cached[i] for i in range(len(cached))], [raw[i] for i in range(len(raw))]
    assert "waveform" not in rows_cached[0] and isinstance(rows_cached[0]["input_features"], np.ndarray)
    assert torch.equal(collate.features(rows_cached), collate.features(rows_raw))


def test_text_normalization_options(tmp_path: Path, processor) -> None:
    nfd = "cafe\u0301"  # e + combining acute: looks like café, is another string
    write_audiofolder(tmp_path, [{"name": "a.wav", "text": f"¡Hola,  {nfd}!", "audio": tone(1.0)}])
    as_written = load_data(data_config(tmp_path), processor).train["text"]
    assert as_written == [f"¡Hola,  {nfd}!"]
    cleaned = load_data(data_config(tmp_path, normalize={"lowercase": True, "strip_punctuation": True,
                                                         "unicode_nfc": True}), processor).train["text"]
    assert cleaned == ["hola café"] and cleaned[0] == unicodedata.normalize("NFC", "hola café")


def test_silence_is_dropped_only_when_asked(tmp_path: Path, processor) -> None:
    write_audiofolder(tmp_path, [{"name": "talk.wav", "text": "hola", "audio": tone(1.0)},
                                 {"name": "quiet.wav", "text": "nada", "audio": np.zeros(16_000, np.float32)}])
    assert load_data(data_config(tmp_path), processor).counts[0].kept == 2
    count = load_data(data_config(tmp_path, drop_silence=True), processor).counts[0]
    assert count.kept == 1 and count.dropped == {"silence (below -50 dBFS)": 1}


def test_interleaving_by_probability(tmp_path: Path, processor) -> None:
    for name, n in [("big", 6), ("small", 2)]:
        write_audiofolder(tmp_path / name, [{"name": f"{i}.wav", "text": f"{name} {i}", "audio": tone(0.5, seed=i)}
                                            for i in range(n)])
    sources = [{"path": str(tmp_path / "big")}, {"path": str(tmp_path / "small")}]
    concatenated = load_data(DataConfig(train=sources, eval=sources[:1]), processor).train
    assert len(concatenated) == 8
    mixed = load_data(DataConfig(train=[{**sources[0], "probability": 0.5}, {**sources[1], "probability": 0.5}],
                                 eval=sources[:1], mixing="interleave"), processor).train
    texts = mixed["text"]
    assert set(texts) == set(concatenated["text"])  # every row of both sources is used
    assert sum(t.startswith("small") for t in texts) >= 3  # the small source is repeated to keep its share


def test_streamed_train_source(tmp_path: Path, corpus_dir: Path, processor) -> None:
    cfg = DataConfig(train=[{"path": str(corpus_dir), "streaming": True}, {"path": str(corpus_dir)}],
                     eval=[{"path": str(corpus_dir), "split": "validation"}])
    data = load_data(cfg, processor)
    assert isinstance(data.train, IterableDataset) and data.counts[0].streamed
    rows = list(data.train)
    assert len(rows) == 16 and {"labels", "text", "waveform"} <= set(rows[0])  # audio kept, log-mel per batch
    assert "| train | corpus" in counts_table(data.counts) and "not counted (streamed)" in counts_table(data.counts)


def test_waveform_augmentation_changes_train_rows_only(tmp_path: Path, corpus_dir: Path, processor) -> None:
    cfg = DataConfig(train=[{"path": str(corpus_dir)}], eval=[{"path": str(corpus_dir), "split": "validation"}],
                     cache_features=True)
    augment = AugmentConfig(speed_prob=1.0, speed_range=(1.25, 1.25), noise_prob=1.0, noise_snr_db=(20.0, 20.0))
    data = load_data(cfg, processor, augment)
    plain = load_data(cfg.model_copy(update={"cache_features": False}), processor)
    torch.manual_seed(0)
    row, original = data.train[0], plain.train[0]
    assert len(row["waveform"]) == int(len(original["waveform"]) / 1.25)  # 25 % faster
    sped_up = np.interp(np.linspace(0, len(original["waveform"]) - 1, len(row["waveform"])),
                        np.arange(len(original["waveform"])), original["waveform"])
    snr = 10 * np.log10(np.mean(sped_up ** 2) / np.mean((np.asarray(row["waveform"]) - sped_up) ** 2))
    assert abs(snr - 20.0) < 1.5
    assert "input_features" in data.eval[0]  # eval rows are never augmented and keep cached features
    torch.manual_seed(0)
    assert np.array_equal(data.train[0]["waveform"], row["waveform"])  # same seed, same draw


def test_structural_problems_are_one_clear_error_each(tmp_path: Path, processor) -> None:
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(RecipeError, match="doesn't contain any data files. An audiofolder holds audio files"):
        load_data(data_config(tmp_path / "empty"), processor)
    with pytest.raises(ValueError, match="unknown Whisper language 'castellano'.*Valid codes: af, am, ar"):
        Source(path="/x", language="castellano")
