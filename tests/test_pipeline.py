"""One builder: training, evaluation and the benchmark configure the model the same way from one recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

import finetune.pipeline
from finetune.cli import main
from finetune.pipeline import build_model, build_pipeline
from finetune.recipe import validate


def settings(model) -> dict:
    """What the recipe decides about a model: decoding, SpecAugment and the LoRA adapters."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    generation, config = base.generation_config, base.config
    lora = model.peft_config["default"] if hasattr(model, "peft_config") else None
    return {
        "decoding": (generation.max_new_tokens, generation.num_beams, generation.do_sample, generation.language,
                     generation.task),
        "spec_augment": (config.apply_spec_augment, config.mask_time_prob, config.mask_time_length,
                         config.mask_feature_prob, config.mask_feature_length),
        "lora": (lora.r, lora.lora_alpha, sorted(lora.target_modules)) if lora else None,
    }


@pytest.fixture()
def recorded(monkeypatch) -> list[dict]:
    """Settings of every model the pipeline configures, in order (an entry point that bypassed it adds none)."""
    seen: list[dict] = []
    configure = finetune.pipeline.configure

    def recording(model, recipe):
        seen.append(settings(configure(model, recipe)))
        return model

    monkeypatch.setattr(finetune.pipeline, "configure", recording)
    return seen


def test_train_evaluate_and_benchmark_build_the_same_model(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path,
                                                            recorded: list[dict]) -> None:
    raw = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run", eval={"batch_size": 4, "max_new_tokens": 7,
                                                                          "num_beams": 2},
                      augment={"spec_augment": True, "mask_time_prob": 0.3, "mask_feature_prob": 0.2})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = validate(raw)
    adapter = tmp_path / "adapter"
    build_model(recipe).save_pretrained(adapter)
    recorded.clear()

    assert main(["check", str(path)]) == 0  # finetune train's steps 1-5
    assert main(["benchmark", str(path), "--steps", "1", "--eval-clips", "1",
                 "--output", str(tmp_path / "bench.json")]) == 0
    assert main(["evaluate", str(path), "--adapter", str(adapter), "--no-baseline", "--output",
                 str(tmp_path / "eval")]) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["world_size"] == 1 and bench["device"] == "cpu" and bench["train"]["steps"] == 1
    assert bench["train"]["samples_per_s"] > 0 and bench["eval"]["clips"] == 1 and "torch" in bench["versions"]
    assert not (tmp_path / "run").exists()  # check and benchmark write nothing into output_dir
    train, benchmark, evaluate = recorded
    assert train == benchmark == evaluate
    assert train == {"decoding": (7, 2, False, "es", "transcribe"), "spec_augment": (True, 0.3, 10, 0.2, 10),
                     "lora": (4, 8.0, ["fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"])}
    pipeline = build_pipeline(recipe)  # what the tests build with
    assert settings(pipeline.model) == train and pipeline.trainer.model is pipeline.model


def test_trainer_arguments_are_the_recipe_or_declared_fixed(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path,
                                                             monkeypatch) -> None:
    """Every Seq2SeqTrainingArguments field train.py sets is a train.* field or in MANAGED_TRAINING_ARGUMENTS (which
    train.extra may not override), and every managed one is set: the whitelist cannot drift from train.py."""
    import finetune.train
    from finetune.recipe_sections import TrainConfig
    from finetune.trainer_fields import MANAGED_TRAINING_ARGUMENTS

    passed: dict = {}
    monkeypatch.setattr(finetune.train, "Seq2SeqTrainingArguments", lambda **kwargs: passed.update(kwargs))
    finetune.train.trainer_arguments(validate(tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")))
    recipe_fields = set(TrainConfig.model_fields) - {"extra", "cache_encoder", "resume", "save_total_limit",
                                                     "gradient_checkpointing"}
    assert set(passed) - recipe_fields <= MANAGED_TRAINING_ARGUMENTS | {"save_total_limit"}
    # Managed without being passed: decoding comes from the eval section through the generation config, resuming
    # from the run directory, checkpointing options from activation_checkpointing_kwargs.
    unset = {"generation_max_length", "generation_num_beams", "resume_from_checkpoint", "gradient_checkpointing_kwargs"}
    assert MANAGED_TRAINING_ARGUMENTS - unset <= set(passed)
