"""`finetune transcribe` and `finetune export` (through their scripts/ wrappers): whisper-CLI output files, long-form
audio/video, CTranslate2."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import ROOT, needs_shared
from tiny import ES_SYNTH, WHISPER_BASE, tiny_processor, tone
from finetune.audio import AudioError, load_audio, probe_duration
from finetune.export import ExportError, check_source, convert
from finetune.metrics import normalizer_for, score
from finetune.recipe import RecipeError
from finetune.transcription import (DecodeOptions, batches_by_length, load_for_inference, temperature_ladder,
                                    to_result, transcribe_batch, words)
from finetune.writers import WRITERS, SubtitleLayout, format_timestamp, write_result

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg (scripts/setup.sh)")
TRANSCRIBE = ROOT / "scripts" / "transcribe.py"


def openai_whisper_utils():
    """openai-whisper's writers module, loaded by path: `import whisper` would need its heavy deps (numba,
    tiktoken), which `pip install --no-deps openai-whisper` leaves out; utils.py itself needs only the stdlib."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs openai-whisper's writers: pip install --no-deps openai-whisper (scripts/setup.sh --dev)")
    path = Path(next(iter(spec.submodule_search_locations))) / "utils.py"
    module_spec = importlib.util.spec_from_file_location("openai_whisper_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


SEGMENTS = [
    {"id": 0, "seek": 0, "start": 0.0, "end": 2.5, "text": " Hola, ¿qué tal?", "tokens": [1, 2]},
    {"id": 1, "seek": 250, "start": 2.5, "end": 7.0004, "text": " una flecha --> y un\ttabulador", "tokens": [3]},
    {"id": 2, "seek": 700, "start": 59.9996, "end": 61.25, "text": "sin espacio inicial ", "tokens": [4]},
    {"id": 3, "seek": 0, "start": 3599.9995, "end": 3723.456, "text": " más de una hora: 'ñandú' \"x\"",
     "tokens": []},
]
RESULT = {"text": "".join(s["text"] for s in SEGMENTS), "segments": SEGMENTS, "language": "es"}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_writers_match_openai_whisper(fmt: str, tmp_path: Path) -> None:
    utils = openai_whisper_utils()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    theirs.mkdir()
    write_result(RESULT, "/some/where/llamada.mp4", ours, fmt)
    utils.get_writer(fmt, str(theirs))(RESULT, "/some/where/llamada.mp4")
    expected = (theirs / f"llamada.{fmt}").read_text(encoding="utf-8")
    assert (ours / f"llamada.{fmt}").read_text(encoding="utf-8") == expected


def _word(word: str, start: float, end: float) -> dict:
    return {"word": word, "start": start, "end": end}


WORDED = {"text": "", "language": "es", "segments": [
    {"id": 0, "seek": 0, "start": 0.0, "end": 3.0, "text": " Hola, ¿qué tal estás hoy?", "tokens": [1],
     "words": [_word(" Hola,", 0.1, 0.5), _word(" ¿qué", 0.6, 0.9), _word(" tal", 0.9, 1.2),
               _word(" estás", 1.3, 1.8), _word(" hoy?", 1.9, 2.6)]},
    {"id": 1, "seek": 300, "start": 3.0, "end": 12.0, "text": " Muy bien, gracias por preguntar.", "tokens": [2],
     "words": [_word(" Muy", 3.1, 3.3), _word(" bien,", 3.3, 3.7), _word(" gracias", 7.5, 8.0),
               _word(" por", 8.0, 8.2), _word(" preguntar.", 8.2, 9.0)]},
]}


@pytest.mark.parametrize("width, count", [(None, None), (12, None), (12, 2), (8, 1), (40, 3)])
@pytest.mark.parametrize("fmt", ["vtt", "srt"])
def test_word_subtitle_layout_matches_openai_whisper(fmt: str, width, count, tmp_path: Path) -> None:
    utils = openai_whisper_utils()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    theirs.mkdir()
    write_result(WORDED, "x/call.wav", ours, fmt, SubtitleLayout(width, count))
    utils.get_writer(fmt, str(theirs))(WORDED, "x/call.wav", {"max_line_width": width, "max_line_count": count,
                                                               "highlight_words": False})
    assert (ours / f"call.{fmt}").read_text(encoding="utf-8") == (theirs / f"call.{fmt}").read_text(encoding="utf-8")


def test_words_from_token_times() -> None:
    processor = tiny_processor()
    ids = processor.tokenizer.convert_tokens_to_ids
    text = [ids(c) for c in " uno dos".replace(" ", "Ġ")]
    tokens = [ids("<|1.00|>"), *text, ids("<|3.00|>")]
    times = [1.0, 1.1, 1.2, 1.3, 1.4, 2.0, 2.2, 2.4, 2.6, 2.9]
    assert words(processor, tokens, times, 1.0, 3.0) == [_word(" uno", 1.1, 2.0), _word(" dos", 2.0, 2.9)]


def test_initial_prompt_and_word_timestamps_reach_generate(timestamp_model_dir: Path) -> None:
    model, processor = load_for_inference(str(timestamp_model_dir), device="cpu")
    model.generation_config.max_new_tokens = 12
    options = DecodeOptions.greedy("es")
    options.max_new_tokens = 12
    plain = transcribe_batch(model, processor, [tone(40.0)], options)[0]
    options.word_timestamps, options.initial_prompt = True, "Señora Pérez"
    seen = {}
    generate = model.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return generate(*args, **kwargs)
    model.generate = spy
    worded = transcribe_batch(model, processor, [tone(40.0)], options)[0]
    prompt = seen["prompt_ids"].tolist()
    assert prompt[0] == processor.tokenizer.convert_tokens_to_ids("<|startofprev|>")
    assert processor.tokenizer.decode(prompt[1:]) == " Señora Pérez" and seen["return_token_timestamps"]
    assert plain["segments"] and worded["segments"] and "words" not in plain["segments"][0]
    assert any(segment["words"] for segment in worded["segments"])
    for segment in worded["segments"]:
        assert "".join(w["word"] for w in segment["words"]).split() == segment["text"].split()
        assert all(segment["start"] <= w["start"] <= w["end"] <= segment["end"] for w in segment["words"])


def test_all_formats_and_timestamps(tmp_path: Path) -> None:
    written = write_result(RESULT, "a/b/c.wav", tmp_path, "all")
    assert sorted(p.name for p in written) == ["c.json", "c.srt", "c.tsv", "c.txt", "c.vtt"]
    assert json.loads((tmp_path / "c.json").read_text()) == RESULT
    utils = openai_whisper_utils()
    for seconds in [0, 0.0004, 0.0005, 59.9995, 3599.9995, 3600, 36000.25]:
        for hours, marker in [(False, "."), (True, ",")]:
            assert format_timestamp(seconds, hours, marker) == utils.format_timestamp(seconds, hours, marker)


def test_to_result_is_monotonic_clamped_and_drops_empty_segments() -> None:
    processor = tiny_processor()
    ids = processor.tokenizer.convert_tokens_to_ids
    eot = processor.tokenizer.eos_token_id

    def raw(start: float, end: float, text: str) -> dict:
        tokens = [ids(c) for c in text.replace(" ", "Ġ")] + [eot]
        return {"start": torch.tensor(start), "end": torch.tensor(end), "tokens": torch.tensor(tokens)}
    result = to_result(processor, [raw(0.0, 4.0, " uno"), raw(3.5, 6.0, " dos"), raw(6.0, 6.5, " "),
                                   raw(6.5, 12.0, "tres")], "es", duration=10.0)
    assert [(s["start"], s["end"], s["text"]) for s in result["segments"]] == [
        (0.0, 4.0, " uno"), (4.0, 6.0, " dos"), (6.5, 10.0, "tres")]
    assert [s["id"] for s in result["segments"]] == [0, 1, 2]
    assert result["text"] == " uno dos tres" and result["language"] == "es"


def test_temperature_ladder_and_batches() -> None:
    assert temperature_ladder(0.0, 0.2) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperature_ladder(0.5, None) == (0.5,)
    assert temperature_ladder(1.0, 0.2) == (1.0,)
    assert batches_by_length([5.0, 60.0, 1.0, 30.0, 2.0], 2) == [[1, 3], [0, 4], [2]]


@needs_ffmpeg
def test_load_audio_reads_video_and_reports_bad_files(tmp_path: Path) -> None:
    sf.write(tmp_path / "tone.wav", tone(3.0, rate=44_100, channels=2), 44_100)
    video = ["-f", "lavfi", "-i", "color=c=black:s=64x64:d=3", "-shortest"]
    for name, extra in [("clip.mkv", ["-c:v", "mpeg4", "-c:a", "libvorbis"]), ("clip.webm", ["-c:a", "libopus"]),
                        ("clip.mp4", [])]:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "tone.wav"), *video, *extra,
                        str(tmp_path / name)], check=True)
        assert abs(len(load_audio(tmp_path / name)) / 16_000 - 3.0) < 0.1, name
        assert abs(probe_duration(tmp_path / name) - 3.0) < 0.1, name  # from metadata, nothing decoded
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=1",
                    str(tmp_path / "silent.mp4")], check=True)
    (tmp_path / "notes.mp3").write_text("not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    expected = {"missing.wav": "no such file", "silent.mp4": "has no audio stream", "empty.wav": "empty file",
                "notes.mp3": "not an audio or video file that ffmpeg can read", ".": "not a file"}
    for name, message in expected.items():
        for read in (load_audio, probe_duration):
            with pytest.raises(AudioError, match=re.escape(message)) as info:
                read(tmp_path / name)
            assert str(tmp_path / name) in str(info.value)


@pytest.mark.parametrize("args, message", [
    (["--language", "klingon"], "unknown Whisper language 'klingon'"),
    (["--output_format", "docx"], "invalid choice: 'docx'"),
    (["--beam_size", "0"], "--beam_size and --batch_size must be at least 1"),
])
def test_cli_rejects_bad_options_before_loading_anything(args: list[str], message: str, capsys) -> None:
    from finetune.cli import main

    with pytest.raises(SystemExit) as exit_status:
        main(["transcribe", "x.wav", "--model", "nowhere", *args])
    assert exit_status.value.code == 2 and message in capsys.readouterr().err


def test_export_converts_a_checkpoint_for_faster_whisper(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ctranslate2", reason="needs the export extra: pip install -e .[export]")
    convert(tiny_model_dir, tmp_path / "ct2", "int8")
    files = {p.name for p in (tmp_path / "ct2").iterdir()}
    assert {"model.bin", "config.json", "vocabulary.json", "tokenizer.json", "preprocessor_config.json"} <= files
    assert json.loads((tmp_path / "ct2" / "preprocessor_config.json").read_text())["feature_size"] == 80
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ExportError, match="not a full Whisper checkpoint"):
        check_source(tmp_path / "adapter")


# --- real weights: long-form audio and video, the CTranslate2 export in faster-whisper ---------------------------

def long_spanish_file(path: Path, seconds: float = 180.0) -> tuple[str, float]:
    """es-synth test clips back to back (0.6 s apart) until `seconds`; returns (reference text, duration)."""
    rows = list(csv.DictReader((ES_SYNTH / "test" / "metadata.csv").open(encoding="utf-8")))
    pieces, texts, total = [], [], 0.0
    for row in rows:
        audio, rate = sf.read(ES_SYNTH / "test" / row["file_name"], dtype="float32")
        assert rate == 16_000
        pieces += [audio, np.zeros(int(0.6 * rate), np.float32)]
        texts.append(row["transcription"])
        total += len(audio) / rate + 0.6
        if total >= seconds:
            break
    sf.write(path, np.concatenate(pieces), 16_000)
    return " ".join(texts), total


def srt_times(text: str) -> list[tuple[float, float]]:
    def seconds(stamp: str) -> float:
        h, m, s = stamp.replace(",", ".").split(":")
        return 3600 * int(h) + 60 * int(m) + float(s)
    return [(seconds(a), seconds(b)) for a, b in re.findall(r"(\S+) --> (\S+)", text)]


@pytest.mark.slow
@needs_shared
@needs_ffmpeg
def test_three_minute_audio_and_video_transcribed_end_to_end(tmp_path: Path) -> None:
    reference, duration = long_spanish_file(tmp_path / "llamada.flac")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x64:r=5",
                    "-i", str(tmp_path / "llamada.flac"), "-shortest", "-c:v", "libx264", "-c:a", "aac",
                    str(tmp_path / "video.mp4")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=1",
                    str(tmp_path / "mute.mp4")], check=True)
    out = tmp_path / "out"
    # No --language: each file's language is detected first, then decoded with it.
    done = subprocess.run([sys.executable, str(TRANSCRIBE), str(tmp_path / "llamada.flac"), str(tmp_path / "gone.wav"),
                           str(tmp_path / "video.mp4"), str(tmp_path / "mute.mp4"), "--model", str(WHISPER_BASE),
                           "--output_dir", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]  # two bad inputs ...
    assert f"error: {tmp_path / 'gone.wav'}: no such file" in done.stderr
    assert f"error: {tmp_path / 'mute.mp4'}: has no audio stream" in done.stderr
    _, normalize = normalizer_for("es", None)
    for stem in ["llamada", "video"]:  # ... and the good ones transcribed anyway
        result = json.loads((out / f"{stem}.json").read_text())
        segments = result["segments"]
        assert result["language"] == "es"
        starts, ends = [s["start"] for s in segments], [s["end"] for s in segments]
        assert all(a <= b for a, b in zip(starts, ends)) and all(b <= c for b, c in zip(ends, starts[1:]))
        assert starts[0] < 1.0 and ends[-1] > duration - 5.0 and ends[-1] <= duration + 0.1, (starts[0], ends[-1])
        assert max(b - a for a, b in zip(ends, starts[1:])) < 5.0  # no stretch of speech left out
        assert score([reference], [result["text"]], normalize)["wer"] < 45.0  # zero-shot base: ~35 % on these clips
        assert srt_times((out / f"{stem}.srt").read_text()) == [(round(a, 3), round(b, 3)) for a, b in
                                                                 zip(starts, ends)]
        assert (out / f"{stem}.vtt").read_text().startswith("WEBVTT\n\n")
        assert (out / f"{stem}.txt").read_text().splitlines() == [s["text"].strip() for s in segments]
        assert len((out / f"{stem}.tsv").read_text().splitlines()) == len(segments) + 1


@pytest.mark.slow
@needs_shared
def test_ctranslate2_export_transcribes_like_transformers(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper", reason="needs the export extra: pip install -e .[export]")
    clips = [str(ES_SYNTH / "test" / name) for name in ("test_00000.flac", "test_00001.flac")]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), str(WHISPER_BASE), "--quantization",
                           "int8", "--output", str(tmp_path / "ct2"), *sum((["--check_audio", c] for c in clips), [])],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    check = json.loads((tmp_path / "ct2" / "export.json").read_text())["check"]
    assert all(check["faster_whisper"]) and check["wer_between"] <= 15.0, check


def test_adapter_is_merged_for_inference(tmp_path: Path, tiny_model_dir: Path) -> None:
    from finetune.model import add_lora, load_model
    from finetune.recipe import LoraConfig, ModelConfig
    from finetune.transcription import load_for_inference

    peft_model = add_lora(load_model(ModelConfig(name=str(tiny_model_dir))), LoraConfig(rank=4), seed=0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)  # a trained-looking adapter (fresh ones start at zero)
    peft_model.save_pretrained(tmp_path / "adapter")
    features = torch.randn(1, 80, 3000)
    with torch.no_grad():
        expected = peft_model.eval()(input_features=features, decoder_input_ids=torch.tensor([[1, 2]])).logits
    model, _ = load_for_inference(str(tiny_model_dir), str(tmp_path / "adapter"), device="cpu")
    assert not any("lora_" in name for name, _ in model.named_parameters())
    with torch.no_grad():
        merged = model(input_features=features, decoder_input_ids=torch.tensor([[1, 2]])).logits
    assert torch.allclose(merged, expected, atol=1e-5)
    with pytest.raises(RecipeError, match="no adapter_config.json"):
        load_for_inference(str(tiny_model_dir), str(tmp_path), device="cpu")
