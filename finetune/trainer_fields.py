"""The Trainer's side of the recipe's `train` section: which Seq2SeqTrainingArguments fields exist, which ones
finetune/train.py sets itself (train.extra may not override them), and the tracking integrations it knows."""

from __future__ import annotations

import dataclasses

# Seq2SeqTrainingArguments fields that finetune/train.py sets from the recipe or fixes for Whisper + LoRA.
MANAGED_TRAINING_ARGUMENTS = {
    "output_dir",
    "per_device_eval_batch_size",
    "eval_strategy",
    "save_strategy",
    "save_steps",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
    "predict_with_generate",
    "generation_max_length",
    "generation_num_beams",
    "remove_unused_columns",
    "label_names",
    "ddp_find_unused_parameters",
    "use_cpu",
    "gradient_checkpointing_kwargs",
    "activation_checkpointing",
    "activation_checkpointing_kwargs",
    "resume_from_checkpoint",
}


def tracker_names() -> list[str]:
    """What train.report_to accepts: the Trainer's tracking integrations, plus none and all."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return ["none", "all", *INTEGRATION_TO_CALLBACK]


def training_argument_names() -> set[str]:
    from transformers import Seq2SeqTrainingArguments

    return {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}
