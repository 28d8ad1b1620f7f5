"""Long-form evaluation (finetune/longform.py): files built from a set's clips with their true boundaries, the
boundary error, and the report's long-form table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset

from finetune.alignment import cross_attention_picture, prefix_ids
from finetune.longform import boundary_errors, long_files, long_form_table, score_long_form
from finetune.metrics import normalizer_for
from finetune.model import load_model, load_processor
from finetune.recipe import SAMPLE_RATE, ModelConfig


def clips(seconds: list[float]) -> Dataset:
    return Dataset.from_dict({"waveform": [np.full(int(s * SAMPLE_RATE), i + 1, np.float32)
                                           for i, s in enumerate(seconds)],
                              "text": [f"frase {i}" for i in range(len(seconds))],
                              "duration": seconds})


def test_long_files_hold_whole_clips_in_order_with_their_boundaries() -> None:
    files = long_files(clips([10.0, 15.0, 12.0, 4.0, 20.0, 3.0]), target_s=30.0)
    assert [f.clips for f in files] == [3, 3]  # 10+15+12 reaches 30 s; the rest forms the last file
    assert files[0].boundaries == [10.0, 25.0] and files[1].boundaries == [4.0, 24.0]
    assert files[0].text == "frase 0 frase 1 frase 2"
    assert len(files[0].waveform) == 37 * SAMPLE_RATE
    assert files[0].waveform[int(10.0 * SAMPLE_RATE)] == 2.0  # clip 1 starts exactly at its boundary


def test_boundary_error_is_the_distance_to_the_nearest_segment_edge() -> None:
    segments = [{"start": 0.0, "end": 4.9}, {"start": 5.3, "end": 9.0}, {"start": 9.0, "end": 20.0}]
    assert boundary_errors(segments, [5.0, 9.5, 19.0]) == pytest.approx([0.1, 0.5, 1.0])
    assert all(math.isinf(e) for e in boundary_errors([], [1.0, 2.0]))


def test_the_report_table_lists_each_long_form_set_and_model() -> None:
    measured = {"files": 2, "seconds": 200.0, "clips": 50, "segments": 48, "boundaries": 48, "wer": 12.5,
                "boundary_error_median_s": 0.21, "boundary_error_p90_s": 0.8, "boundaries_within_0.5_s": 0.75}
    report = {"sets": {"a": {"zero_shot": {"long_form": measured}, "fine_tuned": {"long_form": measured}},
                       "b": {"zero_shot": {}, "fine_tuned": {}}}}
    table = long_form_table(report)
    assert table.splitlines()[2:] == ["| a | zero_shot | 2 | 200 | 12.50 | 48 | 0.21 | 0.80 | 75 % |",
                                      "| a | fine_tuned | 2 | 200 | 12.50 | 48 | 0.21 | 0.80 | 75 % |"]
    assert long_form_table({"sets": {"b": {"fine_tuned": {}}}}) is None


def test_score_long_form_runs_the_sequential_algorithm(timestamp_model_dir) -> None:
    cfg = ModelConfig(name=str(timestamp_model_dir))
    model, processor = load_model(cfg), load_processor(cfg)
    result = score_long_form(model, processor, clips([20.0, 25.0, 5.0]), 40.0, "es", normalizer_for("es", None)[1])
    assert result["files"] == 2 and result["clips"] == 3 and result["boundaries"] == 1
    assert result["seconds"] == pytest.approx(50.0)
    assert result["wer"] >= 0 and result["boundary_error_median_s"] >= 0


def test_alignment_picture_has_a_row_per_token_and_a_column_per_20_ms(timestamp_model_dir) -> None:
    cfg = ModelConfig(name=str(timestamp_model_dir))
    model, processor = load_model(cfg), load_processor(cfg)
    features = processor.feature_extractor(np.random.default_rng(0).standard_normal(16_000 * 3).astype(np.float32),
                                           sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    text = processor.tokenizer(" hola", add_special_tokens=False).input_ids
    picture = cross_attention_picture(model, features, prefix_ids(processor.tokenizer, "es", "transcribe"), text, 3.0)
    assert picture.shape == (len(text), 150)
    assert picture.mean(0).abs().max() < 1e-4  # standardised over the tokens, per frame
    assert model.config._attn_implementation == "sdpa", "the fused attention is back after the picture"
