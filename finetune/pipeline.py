"""The one way a recipe becomes a processor, a configured model, prepared data and a trainer.

Training (finetune/run.py), evaluation, the benchmark and the tests all build through these functions, so a
setting (decoding, SpecAugment, LoRA, windows, the encoder cache) cannot apply in one of them and not another.
`build_pipeline` runs them in order; finetune/run.py calls them one by one, with its own steps in between.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import Seq2SeqTrainingArguments, WhisperProcessor

from finetune.data import PreparedData, load_data
from finetune.encoder_cache import cache_encoder_outputs
from finetune.model import add_lora, load_model, load_processor, set_decoding, set_spec_augment
from finetune.recipe import Recipe
from finetune.replay import PseudoLabeler
from finetune.run_dir import Claim
from finetune.train import WhisperTrainer, build_trainer, is_sharded, training_arguments


def configure(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    """The recipe's decoding (eval section) and SpecAugment (augment section) on a plain or peft-wrapped Whisper."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    set_decoding(base, recipe.eval)
    set_spec_augment(base, recipe.augment)
    return model


def build_model(recipe: Recipe, adapter: str | Path | None = None) -> PeftModel:
    """The base model with fresh LoRA adapters (seeded by train.seed), or with the saved `adapter`, configured."""
    if adapter is not None:
        return configure(load_model(recipe.model, adapter), recipe)
    return configure(add_lora(load_model(recipe.model), recipe.lora, recipe.train.seed), recipe)


def build_data(recipe: Recipe, processor: WhisperProcessor, model: PeftModel,
               args: Seq2SeqTrainingArguments | None = None) -> PreparedData:
    """Train (+ replay, windows), eval and test data; the main process prepares it first, the other ranks then
    read the same cache. Pseudo-labelled replay is transcribed by `model` with its adapter switched off."""
    return load_data(recipe.data, processor, recipe.augment, recipe.train.seed,
                     args.main_process_first if args is not None else contextlib.nullcontext,
                     labeler=PseudoLabeler(recipe, model, processor))


def build_training(recipe: Recipe, model: PeftModel, processor: WhisperProcessor, data: PreparedData,
                   args: Seq2SeqTrainingArguments, claim: Claim | None = None) -> tuple[WhisperTrainer, PreparedData]:
    """The trainer, and the data it trains on: with the frozen-encoder fast path, clips carry their encoder output
    (computed once, cached) instead of audio."""
    data = cache_encoder_outputs(recipe, model, processor, data, args.device, args.main_process_first)
    return build_trainer(recipe, model, processor, data, args, claim), data


def trained_model(trainer: WhisperTrainer, recipe: Recipe, adapter_dir: str | Path) -> PeftModel:
    """The tuned model one process can score and merge: the trainer's own, or, after sharded training (FSDP,
    DeepSpeed ZeRO-3: each rank holds a part), the saved adapter on a fresh base model on this process's device."""
    if not is_sharded(trainer):
        return trainer.model
    return build_model(recipe, adapter_dir).to(trainer.args.device).eval()


@dataclass
class Pipeline:
    recipe: Recipe
    args: Seq2SeqTrainingArguments
    processor: WhisperProcessor
    model: PeftModel
    data: PreparedData  # as trained: with encoder outputs on the fast path
    trainer: WhisperTrainer


def build_pipeline(recipe: Recipe, claim: Claim | None = None) -> Pipeline:
    """Every step from the recipe to a trainer ready to train, as finetune/run.py takes them."""
    args = training_arguments(recipe)
    processor = load_processor(recipe.model)
    model = build_model(recipe)
    data = build_data(recipe, processor, model, args)
    trainer, data = build_training(recipe, model, processor, data, args, claim)
    return Pipeline(recipe, args, processor, model, data, trainer)
