"""A short real fine-tune of Whisper base on es-synth: the tuned model, at the adapter strength the search chose
with a real-speech guard set, must beat zero-shot, and the merged checkpoint must transcribe Spanish in a plain
pipeline with the report's WER. About 5 minutes on 2 CPU cores (7.5 with one thread)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jiwer
import pytest
from conftest import needs_shared
from runs import run_cli
from tiny import ES_SYNTH, SHARED, WHISPER_BASE

from finetune.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, needs_shared]


def test_short_real_run_beats_zero_shot(tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes" / "es-synth-base.yaml").model_dump(mode="json")
    recipe["model"]["name"] = str(WHISPER_BASE)
    es_synth = {"path": str(ES_SYNTH)}
    recipe["data"] = {
        "windows": recipe["data"]["windows"],  # the recipe's packed windows
        "train": [{**es_synth, "split": "train", "max_samples": 32}],
        "eval": [{**es_synth, "split": "validation", "max_samples": 8}],
        "test": [{**es_synth, "split": "test", "max_samples": 16, "name": "es-synth test[:16]"},
                 {"path": str(SHARED / "data" / "real-ivr" / "en"), "split": "test", "max_samples": 8,
                  "language": "en", "guard": True, "name": "real IVR English[:8]"}],
    }
    out = tmp_path / "run"
    recipe["output_dir"] = str(out)
    recipe["train"].update({"max_steps": 4, "eval_steps": 4, "logging_steps": 1})
    recipe["output"].update(parity_clips=2, scale_pick="lowest", scale_grid=[0.0, 0.5, 1.0])
    run_cli(recipe, tmp_path, env={"OMP_NUM_THREADS": "2"})  # both cores: real weights, nothing else runs

    report = json.loads((out / "report.json").read_text())
    scores = report["sets"]["es-synth test[:16]"]
    assert scores["fine_tuned"]["wer"] < scores["zero_shot"]["wer"], scores
    strength = report["adapter_scale"]
    assert strength["chosen"] in (0.5, 1.0) and "real IVR English[:8]" in strength["points"][0]["sets"]
    from transformers import pipeline
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    # The report's WER for the merged model is what a plain pipeline + jiwer loop gives, same normalizer.
    asr = pipeline("automatic-speech-recognition", model=str(out / "merged"))
    with open(ES_SYNTH / "test" / "metadata.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:16]
    normalize = BasicTextNormalizer()
    hyps = [normalize(asr(str(ES_SYNTH / "test" / row["file_name"]))["text"]) for row in rows]
    plain_wer = 100 * jiwer.wer([normalize(row["transcription"]) for row in rows], hyps)
    assert scores["fine_tuned"]["wer"] == pytest.approx(plain_wer, abs=1e-9)
    with open(ES_SYNTH / "test" / "metadata.csv", encoding="utf-8") as f:
        reference = next(row["transcription"] for row in csv.DictReader(f) if row["file_name"] == "test_00002.flac")
    text = asr(str(ES_SYNTH / "test" / "test_00002.flac"))["text"]  # no language given: the checkpoint has it
    assert " ".join(reference.lower().split()[:3]) in text.lower(), (reference, text)
