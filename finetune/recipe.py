"""The recipe: one YAML file, validated into a typed schema that every other module reads.

Defaults live in the section classes (finetune/recipe_sections.py, finetune/recipe_data.py) and nowhere else.
Problems are collected and reported all at once, each with the key, the value that was given and how to fix it
(finetune/recipe_errors.py); command-line overrides (`section.key=value`, finetune/recipe_overrides.py) go through the
same checks. The section classes and Whisper's limits are importable from here, the schema's one public face.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from finetune.recipe_overrides import apply_override
from finetune.recipe_data import DataConfig, Source, TextNormalization, WindowConfig
from finetune.recipe_errors import RecipeError, describe
from finetune.recipe_sections import (AugmentConfig, EvalConfig, HubConfig, LoraConfig, ModelConfig, OutputConfig,
                                      Section, TrainConfig)
from finetune.whisper_spec import (MAX_AUDIO_SECONDS, MAX_TARGET_POSITIONS, PROMPT_TOKENS, SAMPLE_RATE,
                                   language_code, whisper_languages)

__all__ = ["AugmentConfig", "DataConfig", "EvalConfig", "HubConfig", "LoraConfig", "ModelConfig", "OutputConfig",
           "Recipe", "RecipeError", "Source", "TextNormalization", "TrainConfig", "WindowConfig", "dump",
           "load_recipe", "validate", "MAX_AUDIO_SECONDS", "MAX_TARGET_POSITIONS", "PROMPT_TOKENS", "SAMPLE_RATE",
           "language_code", "whisper_languages"]


class Recipe(Section):
    model: ModelConfig
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    hub: HubConfig = Field(default_factory=HubConfig)
    output_dir: str = Field(description="where checkpoints, the adapter, the merged model and reports go")

    @model_validator(mode="after")
    def _resolve_windows(self) -> Recipe:
        if self.data.windows.mode == "auto":  # resolved once here, so saved recipes and logs show what ran
            self.data.windows.mode = self.auto_windows()
        return self

    def auto_windows(self) -> str:
        """data.windows.mode=auto: packed whenever the encoder runs at every step anyway; none where the
        frozen-encoder cache applies (a cached step skips the encoder: faster still) or a train source streams."""
        if any(s.streaming for s in self.data.train):
            return "none"
        if self.train.cache_encoder is not False and not self.encoder_cache_blockers():
            return "none"
        return "packed"

    @model_validator(mode="after")
    def _streaming_needs_steps(self) -> Recipe:
        if any(s.streaming for s in self.data.train) and self.train.max_steps <= 0:
            raise ValueError("train: a streamed train source has no known length: set train.max_steps")
        if self.train.cache_encoder is True and self.encoder_cache_blockers():
            raise ValueError(f"train.cache_encoder=true, but {'; '.join(self.encoder_cache_blockers())}. Remove "
                             "those, or set train.cache_encoder=auto to fall back to the full path")
        return self

    def encoder_cache_blockers(self) -> list[str]:
        """Why encoder outputs cannot be computed once and reused (empty: they can)."""
        blockers = []
        if self.lora.encoder:
            blockers.append("lora.encoder=true trains encoder adapters (set lora.encoder=false)")
        if self.augment.spec_augment:
            blockers.append("augment.spec_augment masks the encoder input at every step")
        if self.augment.on_waveform:
            blockers.append("augment.speed_prob/noise_prob change the audio at every step")
        if any(s.streaming for s in self.data.train):
            blockers.append("a streamed train source cannot be cached")
        if self.data.windows.mode in ("single", "packed"):
            blockers.append(f"data.windows.mode={self.data.windows.mode} builds new windows every epoch")
        return blockers

    @property
    def train_precision(self) -> str:
        return "bf16" if self.train.bf16 else "fp16" if self.train.fp16 else "fp32"

    @property
    def eval_precision(self) -> str:
        return self.train_precision if self.eval.precision == "auto" else self.eval.precision

    def eval_settings(self) -> EvalConfig:
        """The eval section with `precision: auto` resolved (what reports record)."""
        return self.eval.model_copy(update={"precision": self.eval_precision})

    def uses_encoder_cache(self) -> bool:
        return self.train.cache_encoder is not False and not self.encoder_cache_blockers()


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML, apply `section.key=value` overrides, validate; raise RecipeError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(str(path), [f"recipe file not found (working directory: {Path.cwd()})"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(str(path), [f"not valid YAML: {err}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(str(path), [f"the top level must be a mapping of sections, got {type(raw).__name__}"])
    problems = []
    for item in overrides or []:
        try:
            apply_override(raw, item)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise RecipeError(str(path), problems)
    return validate(raw, source=str(path))


def validate(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(source, [describe(e, raw, Recipe) for e in err.errors()]) from None


def dump(recipe: Recipe) -> str:
    """The resolved recipe as YAML, every default filled in (saved next to the outputs)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
