"""The recipe schema: shipped recipes validate, and every kind of mistake gives a readable, pinned message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune.recipe import RecipeError, apply_override, dump, load_recipe, validate

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
MINIMAL = {
    "model": {"name": "openai/whisper-tiny"},
    "data": {"train": {"hub": "some/dataset"}, "eval": {"hub": "some/dataset", "split": "validation"}},
    "output_dir": "runs/x",
}


def problems(raw: dict) -> list[str]:
    with pytest.raises(RecipeError) as info:
        validate(raw)
    return info.value.problems


def with_(**changes) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for key, value in changes.items():
        apply_override(raw, f"{key.replace('__', '.')}={value}")
    return raw


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.data.train and recipe.data.test_sets
    assert validate(yaml.safe_load(dump(recipe))) == recipe  # the saved, resolved recipe loads back the same


def test_there_are_recipes_to_check() -> None:
    assert {p.name for p in RECIPES} >= {"spanish.yaml", "demo.yaml", "es-synth-base.yaml"}


def test_defaults_fill_in() -> None:
    recipe = validate(MINIMAL)
    assert recipe.lora.rank == 32 and recipe.train.resume is False and recipe.eval.metric_for_best == "wer"
    assert recipe.data.test_sets == recipe.data.eval  # no test sets: the eval sets are reported


def test_typo_gives_did_you_mean() -> None:
    raw = with_()
    raw["lora"] = {"rnak": 8}
    assert problems(raw) == ["lora.rnak: unknown key; did you mean 'lora.rank'?"]


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    raw = with_()
    raw["eval"] = {"zzz": 1}
    assert problems(raw) == ["eval.zzz: unknown key; valid keys: baseline, batch_size, bootstrap_samples, confidence, "
                             "guard_threshold, max_new_tokens, metric_for_best, num_beams, precision, temperature, "
                             "worst_utterances"]


def test_wrong_type_names_key_and_value() -> None:
    assert problems(with_(train__learning_rate="fast")) == [
        "train.learning_rate: Input should be a valid number, unable to parse string as a number (got 'fast')"]


def test_missing_required_field() -> None:
    raw = with_()
    del raw["output_dir"]
    assert problems(raw) == ["output_dir: required but missing; add it to the recipe or pass output_dir=... on the "
                             "command line"]


def test_every_problem_reported_at_once() -> None:
    raw = with_(train__learning_rate="fast", lora__rank=0, model__language="klingon")
    raw["train"]["epochs"] = 3
    found = problems(raw)
    assert len(found) == 4
    assert "train.epochs: unknown key; did you mean 'train.num_train_epochs'?" in found
    assert any(p.startswith("lora.rank: Input should be greater than 0 (got 0)") for p in found)
    assert any("unknown Whisper language 'klingon'" in p and "Valid codes:" in p for p in found)


def test_short_names_from_other_tools_point_to_our_keys() -> None:
    raw = with_()
    raw.setdefault("train", {}).update({"lr": 0.1, "batch_size": 4})
    assert sorted(problems(raw)) == ["train.batch_size: unknown key; did you mean 'train.per_device_train_batch_size'?",
                                     "train.lr: unknown key; did you mean 'train.learning_rate'?"]


def test_language_names_and_codes() -> None:
    assert validate(with_(model__language="Spanish")).model.language == "es"
    assert validate(with_(model__language="ES")).model.language == "es"
    assert problems(with_(model__language="spanisch"))[0].startswith(
        "model.language: unknown Whisper language 'spanisch'. Did you mean 'spanish'")


def test_source_needs_exactly_one_origin() -> None:
    raw = with_()
    raw["data"]["train"] = {"hub": "a/b", "path": "/data"}
    assert problems(raw) == ["data.train.0: give exactly one of `hub:` (a Hub dataset id), `path:` (a local "
                             "audiofolder) or `manifest:` (a CSV/TSV/JSONL file)"]
    raw["data"]["train"] = {"manifest": "clips.xlsx"}
    assert problems(raw) == ["data.train.0.manifest: manifest must end in one of .csv, .tsv, .jsonl, .json "
                             "(got 'clips.xlsx')"]


def test_test_sets_need_distinct_names() -> None:
    raw = with_()
    raw["data"]["test"] = [{"path": "/a/es"}, {"path": "/b/es"}]
    assert problems(raw) == ["data: test sets ['es:train'] share a name: give each a distinct `name:` (reports key "
                             "on it)"]


def test_bf16_and_fp16_conflict() -> None:
    found = problems(with_(train__bf16="true", train__fp16="true"))
    assert found == ["train: bf16 and fp16 are both true: choose one (bf16 where the hardware has it)"]


def test_extra_training_arguments_are_checked() -> None:
    assert validate(with_(train__extra="{adam_beta2: 0.98}")).train.extra == {"adam_beta2": 0.98}
    found = problems(with_(train__extra="{adam_beta: 0.98, learning_rate: 0.1, eval_steps: 5}"))
    assert len(found) == 1
    assert "extra.adam_beta is not a Seq2SeqTrainingArguments field. Did you mean 'adam_beta" in found[0]
    assert "extra.learning_rate is set by the recipe itself: use train.learning_rate" in found[0]
    assert "extra.eval_steps is set by the recipe itself" in found[0]


@pytest.mark.parametrize("value,expected", [("auto", True), ("true", True), ("false", False), ("never", False),
                                            ("runs/x/checkpoint-10", "runs/x/checkpoint-10")])
def test_resume_values(value: str, expected) -> None:
    assert validate(with_(train__resume=value)).train.resume == expected


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    recipe = load_recipe(path, ["train.learning_rate=5.0e-4", "output_dir=runs/es-lr5e-4", "train.bf16=true",
                                "lora.target_modules=[q_proj, v_proj]", "data.train.0.max_samples=10"])
    assert recipe.train.learning_rate == 5.0e-4 and recipe.output_dir == "runs/es-lr5e-4" and recipe.train.bf16
    assert recipe.lora.target_modules == ["q_proj", "v_proj"] and recipe.data.train[0].max_samples == 10


def test_override_problems_are_reported_like_file_problems(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ["train.learnig_rate=1.0e-3"])
    assert info.value.problems == ["train.learnig_rate: unknown key; did you mean 'train.learning_rate'?"]
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ["train.learning_rate", "data.train.5.path=x"])
    assert info.value.problems == [
        "override 'train.learning_rate': expected section.key=value, e.g. train.learning_rate=5.0e-4",
        "override 'data.train.5.path=x': '5' is not an index of a list of 1 items",
    ]


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_only_safe_yaml(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_cli_reports_recipe_errors_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    raw = with_()
    raw["lora"] = {"rnak": 8}
    path.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, str(ROOT / "finetune" / "run.py"), str(path), "train.bf16=maybe"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "2 problems" in done.stderr
    assert "lora.rnak: unknown key; did you mean 'lora.rank'?" in done.stderr
    assert "train.bf16: Input should be a valid boolean" in done.stderr and "(got 'maybe')" in done.stderr


def test_adapter_strength_settings() -> None:
    recipe = validate(MINIMAL)
    assert recipe.output.adapter_scale == "auto" and recipe.output.scale_grid == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert validate(with_(output__adapter_scale=0.5)).output.adapter_scale == 0.5
    assert validate(with_(output__scale_grid="[1.0, 0.5, 1.25]")).output.scale_grid == [0.0, 0.5, 1.0, 1.25]
    [problem] = problems(with_(output__adapter_scale=-1))
    assert problem.startswith("output.adapter_scale: a fixed adapter strength must lie in [0, 4]")
    assert problems(with_(output__scale_grid="[0.5, 9]"))[0].startswith("output.scale_grid: needs strengths in [0, 4]")
    assert "output.adapter_scale" in problems(with_(output__adapter_scale="best"))[0]
    assert problems(with_(eval__confidence=1.5))[0].startswith("eval.confidence:")


def test_windows_auto_packs_only_where_the_encoder_runs_anyway() -> None:
    assert validate(with_(data__windows__mode="auto")).data.windows.mode == "packed"  # encoder LoRA: it runs
    frozen = validate(with_(data__windows__mode="auto", lora__encoder="false"))
    assert frozen.data.windows.mode == "none" and frozen.uses_encoder_cache()  # the cache beats packing there
    streamed = with_(data__windows__mode="auto", train__max_steps=10)
    streamed["data"]["train"]["streaming"] = True
    assert validate(streamed).data.windows.mode == "none"
    assert validate(with_(data__windows__mode="off")).data.windows.mode == "none"  # YAML's `off` is false
    assert validate(with_()).data.windows.mode == "none"  # the default
    packed = validate(with_(data__windows__mode="packed", lora__encoder="false"))
    assert not packed.uses_encoder_cache() and "windows" in packed.encoder_cache_blockers()[-1]
    streamed["data"]["windows"] = {"mode": "packed"}
    assert any("non-streamed train sources" in p for p in problems(streamed))


def test_only_test_sets_are_scored_long_form() -> None:
    raw = with_()
    raw["data"]["train"]["long_form_s"] = 180
    assert any("only test sets are scored long-form" in p for p in problems(raw))
    raw = with_(data__test="[{hub: some/dataset, split: test, long_form_s: 10}]")
    assert any("long_form_s" in p for p in problems(raw))  # at least 30 s: several windows
