"""Recipe -> Seq2SeqTrainingArguments (field by field) -> Seq2SeqTrainer; training, resuming, saving the adapter."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from finetune.checkpoints import mark_complete, rotate
from finetune.collator import SpeechCollator
from finetune.data import PreparedData
from finetune.metrics import compute_metrics_fn
from finetune.model import precision_context
from finetune.outputs import atomic_dir, is_main_process, log
from finetune.packing import TrainingWindows
from finetune.recipe import Recipe, RecipeError
from finetune.run_dir import Claim
from finetune.tracking import check_trackers

ADAPTER_DIR = "adapter"  # <output_dir>/adapter: the best adapter and the processor


def has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or \
        torch.backends.mps.is_available()


def check_cpu_threads(args: Seq2SeqTrainingArguments) -> None:
    """Warn when CPU ranks use fewer threads than the machine offers them (accelerate launch sets 1 by default)."""
    if args.device.type != "cpu":
        return
    available = max(1, (os.cpu_count() or 1) // max(1, args.world_size))
    if torch.get_num_threads() < available:
        log.warning("Training on CPU with %d torch thread(s) per process, %d core(s) available per process "
                    "(OMP_NUM_THREADS=%s; accelerate launch sets 1 unless given --num_cpu_threads_per_process %d)",
                    torch.get_num_threads(), available, os.environ.get("OMP_NUM_THREADS", "unset"), available)


def training_arguments(recipe: Recipe) -> Seq2SeqTrainingArguments:
    """The recipe's training arguments; under `accelerate launch` this joins the process group. A DeepSpeed config
    without DeepSpeed installed is a clear error; sharding the launcher asked for but cannot apply, a warning."""
    check_trackers(recipe)
    try:
        args = trainer_arguments(recipe)
    except ImportError as err:  # the accelerate config asks for DeepSpeed: transformers imports it here
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
            raise
        raise RecipeError("accelerate config", [f"it asks for DeepSpeed, which cannot be imported ({err}). "
                                                "pip install deepspeed, or launch with another config"]) from None
    check_parallelism(args)
    return args


def check_parallelism(args: Seq2SeqTrainingArguments) -> None:
    """accelerate applies FSDP and DeepSpeed only on accelerators (GPUs): CPU ranks run plain data parallel, which
    gives the same results without sharding. Say so instead of letting the config suggest otherwise."""
    if not is_main_process():
        return
    running = str(args.distributed_state.distributed_type)
    for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DEEPSPEED", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(variable, "false").lower() == "true" and name not in running:
            log.warning("The accelerate config asks for %s, but this run is %s: accelerate applies %s on GPUs only, "
                        "and these ranks run on the CPU. Training goes on as plain data parallel (same results, "
                        "no sharding).", name, running, name)


def trainer_arguments(recipe: Recipe) -> Seq2SeqTrainingArguments:
    """Every recipe field mapped explicitly; the fixed settings below are what Whisper + LoRA need."""
    t, e = recipe.train, recipe.eval
    return Seq2SeqTrainingArguments(
        output_dir=recipe.output_dir,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler_type,
        max_grad_norm=t.max_grad_norm,
        bf16=t.bf16,
        fp16=t.fp16,
        activation_checkpointing=t.gradient_checkpointing,
        # Non-reentrant checkpointing works with frozen base weights and LoRA, under DDP too (reentrant fails with
        # "element 0 of tensors does not require grad", and under DDP with "marked as ready twice").
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=t.logging_steps,
        report_to=t.report_to,
        save_total_limit=None,  # WhisperTrainer rotates itself, counting complete checkpoints only
        seed=t.seed,
        dataloader_num_workers=t.dataloader_num_workers,
        per_device_eval_batch_size=e.batch_size,
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.eval_steps,  # equal to eval_steps so every scored checkpoint can be the best one
        load_best_model_at_end=True,
        metric_for_best_model=e.metric_for_best,
        greater_is_better=False,  # error rates: lower is better
        predict_with_generate=True,  # score WER on generated text, not on teacher-forced logits
        remove_unused_columns=False,  # the collator needs `waveform`, which the model's forward does not take
        label_names=["labels"],
        ddp_find_unused_parameters=False,  # LoRA leaves base weights unused by design; the search is slow and warns
        use_cpu=not has_accelerator(),  # CPU-only machines: gloo ranks under `accelerate launch --multi_gpu`
        **t.extra,
    )


class WhisperTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer that generates each clip in its own language (mixed-language eval sets score right).

    The collator's `language` list is no model input: it is dropped for the loss and handed to generate().
    Evaluation runs under `eval_precision` autocast: the Trainer's mixed precision covers training steps only.
    A checkpoint is marked complete once every rank has written its part, and only then can rotation delete an
    older one (finetune/checkpoints.py).
    """

    def __init__(self, *args, eval_precision: str = "fp32", claim: Claim | None = None, keep: int | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eval_precision = eval_precision
        self.claim, self.keep = claim, keep
        if claim is not None:
            self.add_callback(Progress(claim))

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every rank's files (optimizer shards, RNG state) are on disk
        if is_main_process() and self.claim is not None:
            out = Path(self._get_output_dir(trial=trial))
            mark_complete(out / f"checkpoint-{self.state.global_step}", self.claim.mark(self.state.global_step))
            rotate(out, self.keep, self.state.best_model_checkpoint)

    def compute_loss(self, model, inputs, *args, **kwargs):
        inputs = {k: v for k, v in inputs.items() if k != "language"}
        return super().compute_loss(model, inputs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        inputs = dict(inputs)
        languages = inputs.pop("language", None)
        if languages and "language" not in gen_kwargs:
            gen_kwargs["language"] = languages[0] if len(set(languages)) == 1 else list(languages)
        with precision_context(self.args.device.type, self.eval_precision):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys,
                                           **gen_kwargs)


class Progress(TrainerCallback):
    """Keeps the claim's step current, for the line an interrupt prints."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim

    def on_step_end(self, args, state, control, **kwargs):
        self.claim.step = state.global_step


class WindowEpochs(TrainerCallback):
    """Redraws the training windows for each epoch. accelerate forwards the epoch to the dataset only when the
    sampler takes none (one process), so under DDP this is what moves the plan on; both give the same epoch."""

    def __init__(self, windows: Any) -> None:
        self.windows = windows

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.windows.set_epoch(math.floor((state.epoch or 0.0) + 1e-4))  # epoch counts in floats (1.5 = mid-way)


def build_trainer(recipe: Recipe, model: PeftModel, processor, data: PreparedData,
                  args: Seq2SeqTrainingArguments, claim: Claim | None = None) -> WhisperTrainer:
    trainer = WhisperTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=SpeechCollator(processor, model.config.decoder_start_token_id),
        processing_class=processor,  # saved with every checkpoint
        compute_metrics=compute_metrics_fn(processor.tokenizer, recipe.model.language),
        eval_precision=recipe.eval_precision,
        claim=claim,
        keep=recipe.train.save_total_limit,
    )
    if isinstance(data.train, TrainingWindows):
        trainer.add_callback(WindowEpochs(data.train))
    return trainer


def train(trainer: WhisperTrainer) -> dict[str, Any]:
    """Train from the claim's checkpoint (or fresh); afterwards trainer.model holds the best adapter
    (load_best_model_at_end). The metrics cover the whole run, also when it was resumed."""
    claim = trainer.claim
    result = trainer.train(resume_from_checkpoint=claim.resume if claim else None)
    state = trainer.state
    log.info("Best checkpoint: %s (%s = %s)", state.best_model_checkpoint, trainer.args.metric_for_best_model,
             state.best_metric)
    metrics = {**result.metrics, "best_checkpoint": state.best_model_checkpoint, "best_metric": state.best_metric,
               "global_step": state.global_step}
    if claim and claim.resume:
        metrics.pop("train_samples_per_second", None)  # of the last session only; not known across sessions
        metrics.update(whole_run_metrics(state.log_history, state.global_step, claim, result.metrics))
    return metrics


def whole_run_metrics(history: list[dict], steps: int, claim: Claim, session: dict[str, float]) -> dict[str, Any]:
    """A resumed run's loss and time over all of its sessions (the Trainer's cover only the last session):
    the mean of the logged losses weighted by the steps each covers, and the training seconds of every session."""
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    covered = [(step - before, loss) for (before, _), (step, loss) in zip([(0, 0.0)] + losses, losses)]
    total = sum(n for n, _ in covered)
    runtime = claim.prior_seconds + session.get("train_runtime", 0.0)
    return {"train_loss": sum(n * loss for n, loss in covered) / total if total else session.get("train_loss"),
            "train_runtime": runtime, "train_steps_per_second": steps / runtime if runtime else None,
            "resumed_from": claim.resume, "sessions": claim.prior_sessions + 1}


def save_adapter(trainer: Seq2SeqTrainer, output_dir: str) -> Path:
    """The best adapter (peft format) and the processor in <output_dir>/adapter, written atomically. Every rank
    calls it: under FSDP or DeepSpeed ZeRO-3 the adapter's shards are gathered from all of them; the main process
    writes (the other ranks' path is never written)."""
    final = Path(output_dir) / ADAPTER_DIR
    with atomic_dir(final) if is_main_process() else contextlib.nullcontext(final) as folder:
        trainer.save_model(str(folder))  # adapter weights + config, and the processor (the trainer's)
        if is_main_process():
            (folder / "training_args.bin").unlink(missing_ok=True)  # pickled Trainer arguments: not an adapter's
    trainer.accelerator.wait_for_everyone()
    return final


def is_sharded(trainer: Seq2SeqTrainer) -> bool:
    """Whether the trained model's parameters are spread over the ranks (FSDP, DeepSpeed ZeRO-3), so that one
    process alone cannot run or merge it."""
    if trainer.is_fsdp_enabled:
        return True
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    return plugin is not None and plugin.zero_stage == 3
