"""The recipe's sections other than `data`: model, LoRA, training, augmentation, evaluation, outputs, Hub."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from finetune.recipe_errors import suggest
from finetune.trainer_fields import MANAGED_TRAINING_ARGUMENTS, tracker_names, training_argument_names
from finetune.whisper_spec import MAX_TARGET_POSITIONS, PROMPT_TOKENS, language_code


class Section(BaseModel):
    # extra="forbid": a typo'd key must be an error, never a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Section):
    name: str = Field(description="Hub id (openai/whisper-small) or a local directory in transformers format")
    revision: str | None = Field(None, description="Hub branch, tag or commit; ignored for local directories")
    language: str = Field("es", description="language token of the targets, a code (es) or a name (spanish)")
    task: Literal["transcribe", "translate"] = "transcribe"
    # dtype the base weights are held in; bfloat16 halves memory, float32 is exact on CPU.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"

    @field_validator("language")
    @classmethod
    def _known_language(cls, v: str) -> str:
        return language_code(v)


class LoraConfig(Section):
    rank: int = Field(32, gt=0)
    alpha: float = Field(64.0, gt=0, description="scale = alpha / rank (alpha / sqrt(rank) with rslora)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # Attention and MLP projections of encoder and decoder: on Whisper this beats q/v-only at the same rank.
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    use_dora: bool = False
    use_rslora: bool = False
    # false: adapters in the decoder only; the encoder stays frozen, so its outputs can be computed once and cached
    # (train.cache_encoder). On whisper-base that step is several times faster; the encoder then cannot adapt.
    encoder: bool = Field(True, description="adapters in the encoder too (false = decoder only, encoder frozen)")

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one module name, e.g. [q_proj, v_proj]")
        return v


class TrainConfig(Section):
    """Mapped field by field onto Seq2SeqTrainingArguments (see finetune/train.py)."""

    learning_rate: float = Field(1.0e-3, gt=0.0)
    num_train_epochs: float = Field(3.0, gt=0.0)
    max_steps: int = Field(-1, description="> 0 overrides num_train_epochs")
    per_device_train_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    warmup_steps: float = Field(0.1, ge=0.0, description="int = steps, float in [0, 1) = share of all steps")
    weight_decay: float = Field(0.0, ge=0.0)
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = Field(1.0, gt=0.0)
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    # Frozen-encoder fast path: each clip's encoder output computed once (datasets cache on disk) and reused for
    # every epoch and for evaluation. auto = on when nothing can change it: lora.encoder false, no SpecAugment, no
    # waveform augmentation, no streamed train source. true = require it (an error says what prevents it).
    cache_encoder: Literal["auto", True, False] = Field(
        "auto", description="reuse cached encoder outputs when the encoder is frozen (auto, true, false)"
    )
    eval_steps: int = Field(100, gt=0, description="evaluate and save a checkpoint every N optimizer steps")
    logging_steps: int = Field(10, gt=0)
    save_total_limit: int | None = Field(2, gt=0, description="checkpoints kept (the best one is always kept)")
    seed: int = 42
    dataloader_num_workers: int = Field(0, ge=0)
    resume: bool | str = Field(
        False, description="auto/true = latest checkpoint in output_dir, false = start fresh, or a checkpoint path"
    )
    # Experiment tracking through the Trainer's own integrations (losses, learning rate, eval WER per step).
    # tensorboard writes into <output_dir>/tensorboard; the others log where their own settings say (WANDB_PROJECT,
    # MLFLOW_TRACKING_URI, ...). A chosen tracker that is not installed stops the run before training.
    report_to: list[str] = Field(default_factory=lambda: ["none"], description="none, or trackers: tensorboard, "
                                 "wandb, mlflow, trackio, comet_ml, clearml, ... (all = every one installed)")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="any other Seq2SeqTrainingArguments field, checked by name"
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else ["none"] if v is None or v is False else v

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, v: list[str]) -> list[str]:
        known = tracker_names()
        unknown = [name for name in v if name not in known]
        if unknown:
            close = [c for name in unknown for c in [suggest(name, known)] if c]
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown tracker(s) {unknown}.{hint} Known: {', '.join(known)}")
        if len(v) > 1 and ({"none", "all"} & set(v)):
            raise ValueError("none and all stand alone: give either one of them or a list of trackers")
        return v

    @field_validator("resume", mode="before")
    @classmethod
    def _resume_words(cls, v: Any) -> Any:
        words = {"auto": True, "true": True, "false": False, "never": False, "no": False, "": False}
        return words.get(v.strip().lower(), v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are both true: choose one (bf16 where the hardware has it)")
        owned = set(type(self).model_fields) | MANAGED_TRAINING_ARGUMENTS
        problems = []
        for key in self.extra:
            if key in owned:
                problems.append(f"extra.{key} is set by the recipe itself: use train.{key} or remove it")
            elif key not in training_argument_names():
                close = suggest(key, sorted(training_argument_names()))
                hint = f" Did you mean {close!r}?" if close else ""
                problems.append(f"extra.{key} is not a Seq2SeqTrainingArguments field.{hint}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AugmentConfig(Section):
    """Training-only augmentation, all off by default."""

    spec_augment: bool = Field(False, description="Whisper's own SpecAugment (time and feature masking)")
    mask_time_prob: float = Field(0.05, ge=0.0, le=1.0)
    mask_time_length: int = Field(10, gt=0, description="frames (10 ms each)")
    mask_feature_prob: float = Field(0.0, ge=0.0, le=1.0)
    mask_feature_length: int = Field(10, gt=0, description="mel bins")
    speed_prob: float = Field(0.0, ge=0.0, le=1.0, description="share of clips played faster or slower")
    speed_range: tuple[float, float] = Field((0.9, 1.1), description="speed factor drawn uniformly from this range")
    noise_prob: float = Field(0.0, ge=0.0, le=1.0, description="share of clips with white noise added")
    noise_snr_db: tuple[float, float] = Field((10.0, 30.0), description="signal-to-noise ratio range, dB")

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        low, high = self.speed_range
        if not 0.5 <= low <= high <= 2.0:
            raise ValueError(f"speed_range {list(self.speed_range)}: need 0.5 <= low <= high <= 2.0")
        if self.noise_snr_db[0] > self.noise_snr_db[1]:
            raise ValueError(f"noise_snr_db {list(self.noise_snr_db)}: low must not exceed high")
        return self

    @property
    def on_waveform(self) -> bool:
        """Waveform augmentation needs the waveform at every step (so features cannot be cached)."""
        return self.speed_prob > 0 or self.noise_prob > 0


class EvalConfig(Section):
    batch_size: int = Field(8, gt=0, description="clips per generate() call, per device")
    num_beams: int = Field(1, gt=0, description="1 = greedy")
    temperature: float = Field(0.0, ge=0.0, description="0 = deterministic; > 0 samples (reports then vary)")
    max_new_tokens: int = Field(128, gt=0, le=MAX_TARGET_POSITIONS - PROMPT_TOKENS)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="numerics of generation in reports: auto = the training precision (train.bf16/fp16)"
    )
    metric_for_best: Literal["wer", "cer", "wer_ortho", "cer_ortho"] = Field(
        "wer", description="lower is better; wer = normalized WER"
    )
    baseline: bool = Field(True, description="also score the zero-shot base model on the test sets")
    guard_threshold: float = Field(1.0, ge=0.0, description="WER points a guard set may rise before it is flagged "
                                                            "(when the rise is also significant)")
    # Error bars: bootstrap over utterances (seeded, so reports repeat); a guard-set rise counts as a regression
    # only when it exceeds guard_threshold AND the paired bootstrap interval of the difference excludes zero.
    bootstrap_samples: int = Field(1000, ge=100, description="bootstrap resamples per interval and paired test")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of intervals and paired tests")
    worst_utterances: int = Field(10, ge=0, description="sclite-style alignments shown per set and model")


class OutputConfig(Section):
    merge: bool = Field(True, description="merge the best adapter into <output_dir>/merged")
    parity_clips: int = Field(4, ge=0, description="eval clips transcribed by merged and base+adapter to compare")
    # Adapter strength s: the shipped model is W + s x delta (0 = base, 1 = as trained). auto: score scale_grid on
    # the eval set and the guard sets, keep the best in-domain strength that no guard set regresses significantly
    # (finetune/adapter_scale.py); a number: use it as is.
    adapter_scale: Literal["auto"] | float = Field("auto", description="auto, or a strength >= 0 (1 = as trained)")
    scale_grid: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                    description="strengths scored when adapter_scale is auto (0 is always added)")
    # within_noise: among the strengths that keep the guard sets, the smallest one whose in-domain WER is not
    # significantly worse than the lowest (least change for the same measured gain); lowest: the lowest WER.
    scale_pick: Literal["within_noise", "lowest"] = "within_noise"
    # lazy: guard sets are scored at 0, at 1 and where the choice needs them (same answer as full, fewer passes);
    # full: at every strength (the complete curve in the report).
    scale_search: Literal["lazy", "full"] = "lazy"

    @field_validator("adapter_scale")
    @classmethod
    def _non_negative(cls, v: Any) -> Any:
        if isinstance(v, float) and not 0.0 <= v <= 4.0:
            raise ValueError("a fixed adapter strength must lie in [0, 4] (0 = base model, 1 = as trained)")
        return v

    @field_validator("scale_grid")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= x <= 4.0 for x in v):
            raise ValueError("needs strengths in [0, 4], e.g. [0.0, 0.5, 0.75, 1.0]")
        return sorted(set(v) | {0.0})


class HubConfig(Section):
    """Publishing to the Hugging Face Hub. The token comes from HF_TOKEN or `hf auth login`, never from here."""

    push: bool = Field(False, description="upload at the end of a run (or later: finetune push RUN_DIR)")
    repo_id: str | None = Field(None, description="user-or-org/name")
    private: bool = True
    upload: Literal["adapter", "merged", "both"] = Field("adapter", description="both: the merged model goes to "
                                                                                 "a `-merged` sibling repo")
    revision: str | None = Field(None, description="branch to commit to; default the repo's main branch")
    commit_message: str = "Upload fine-tuned Whisper (finetune)"
    license: str = Field("apache-2.0", description="model card licence; Whisper's weights are Apache-2.0 on the Hub")

    @model_validator(mode="after")
    def _repo(self) -> HubConfig:
        if self.push and not self.repo_id:
            raise ValueError("push is true but repo_id is missing: set hub.repo_id=<user-or-org>/<name>")
        if self.repo_id is not None and self.repo_id.count("/") != 1:
            raise ValueError(f"repo_id {self.repo_id!r} must look like <user-or-org>/<name>")
        return self
