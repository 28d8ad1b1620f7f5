"""Replay: sources mixed into training at a ratio; unlabeled ones transcribed once by the base model (cached)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_recipe

import finetune.replay as replay
from finetune.data import load_data
from finetune.model import load_processor
from finetune.pipeline import build_model
from finetune.recipe import RecipeError, validate
from finetune.rows import label_ids


def replay_recipe(model_dir: Path, corpus: Path, out: Path, **eval_settings):
    source = {"path": str(corpus), "split": "validation", "pseudo_label": True, "language": "en", "name": "en replay"}
    raw = tiny_recipe(model_dir, corpus, out, eval={"batch_size": 4, "max_new_tokens": 8, **eval_settings})
    raw["data"].update(replay=[source], replay_ratio=0.5)
    return validate(raw)


def loaded(recipe):
    processor = load_processor(recipe.model)
    return processor, replay.PseudoLabeler(recipe, build_model(recipe), processor)


def test_pseudo_labels_are_the_base_models_cached_and_mixed_at_the_ratio(tmp_path: Path, tiny_model_dir: Path,
                                                                          corpus_dir: Path, monkeypatch) -> None:
    calls = []

    def fake_generate(model, processor, rows):
        assert not any(getattr(m, "merged", False) for m in model.modules())
        calls.append(len(rows))
        return [f"clip said {row['duration']:.2f}" for row in rows], [False] * len(rows)

    monkeypatch.setattr(replay, "generate_rows", fake_generate)
    recipe = replay_recipe(tiny_model_dir, corpus_dir, tmp_path / "a")
    processor, labeler = loaded(recipe)
    data = load_data(recipe.data, processor, labeler=labeler)
    [count] = [c for c in data.counts if c.split == "replay"]
    train_rows = next(c.kept for c in data.counts if c.split == "train")
    assert sum(calls) == count.kept > 0
    assert len(data.train) == train_rows + round(0.5 * train_rows)
    mixed = [data.train[i] for i in range(train_rows, len(data.train))]
    for row in mixed:
        text = f"clip said {row['duration']:.2f}"
        assert row["text"] == text and row["language"] == "en"
        assert list(row["labels"]) == label_ids(processor.tokenizer, text, "en")  # <|en|>: the source's language
    # A second run with the same base model and decoding reads the labels back instead of transcribing again.
    calls.clear()
    again = load_data(recipe.data, processor, labeler=loaded(recipe)[1])
    assert calls == [] and [again.train[i]["text"] for i in range(train_rows, len(again.train))] == \
        [row["text"] for row in mixed]
    # Other decoding settings are another labelling.
    other = replay_recipe(tiny_model_dir, corpus_dir, tmp_path / "b", max_new_tokens=7)
    load_data(other.data, processor, labeler=loaded(other)[1])
    assert sum(calls) == count.kept


def test_clips_the_base_model_hears_nothing_in_are_dropped_and_counted(tmp_path: Path, tiny_model_dir: Path,
                                                                       corpus_dir: Path, monkeypatch) -> None:
    heard = iter([True, False] * 8)
    monkeypatch.setattr(replay, "generate_rows", lambda m, p, rows: (
        ["words" if next(heard) else "" for _ in rows], [False] * len(rows)))
    recipe = replay_recipe(tiny_model_dir, corpus_dir, tmp_path / "a", max_new_tokens=6)
    processor, labeler = loaded(recipe)
    data = load_data(recipe.data, processor, labeler=labeler)
    [count] = [c for c in data.counts if c.split == "replay"]
    assert count.kept == count.rows // 2 and count.dropped == {replay.EMPTY: count.rows // 2}
    # Nothing heard at all: the source is unusable, said before any training, with the reason.
    monkeypatch.setattr(replay, "generate_rows", lambda m, p, rows: ([""] * len(rows),
                                                                                  [False] * len(rows)))
    recipe = replay_recipe(tiny_model_dir, corpus_dir, tmp_path / "b", max_new_tokens=5)
    with pytest.raises(RecipeError, match="(?s)en replay: no usable rows left.*empty pseudo-label: 4"):
        load_data(recipe.data, processor, labeler=loaded(recipe)[1])


def test_replay_rules_are_checked_in_the_recipe(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    raw = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path)
    raw["data"]["train"][0]["pseudo_label"] = True
    with pytest.raises(RecipeError, match="only data.replay sources may"):
        validate(raw)
    raw = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path)
    raw["data"]["replay"] = {"path": str(corpus_dir), "split": "validation", "guard": True}
    with pytest.raises(RecipeError, match="only test sets are guards"):
        validate(raw)
    raw = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path)
    raw["data"]["replay"] = [{"path": str(corpus_dir), "split": "validation", "pseudo_label": True, "language": "en"}]
    with pytest.raises(RecipeError, match="needs the base model"):  # entry points without a model
        load_data(validate(raw).data, load_processor(validate(raw).model))


def test_pseudo_labelled_replay_must_say_its_language(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    raw = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path)
    raw["data"]["replay"] = [{"path": str(corpus_dir), "split": "validation", "pseudo_label": True}]
    with pytest.raises(RecipeError, match="transcribes it in"):
        validate(raw)
