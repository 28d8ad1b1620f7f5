"""The recipe: one YAML file, validated into a typed schema that every other module reads.

Defaults live here and nowhere else. Problems are collected and reported all at once, each with the key, the
value that was given and how to fix it; command-line overrides (`section.key=value`) go through the same checks.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Whisper's decoder has 448 positions; the prompt <|sot|><|lang|><|task|><|notimestamps|> takes 4 of them.
MAX_TARGET_POSITIONS = 448
PROMPT_TOKENS = 4
MAX_AUDIO_SECONDS = 30.0  # Whisper's encoder sees at most 30 s (3000 mel frames)
SAMPLE_RATE = 16_000  # Hz: what Whisper's feature extractor expects


class RecipeError(ValueError):
    """A recipe problem a user can fix; its message lists every problem found, one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} {noun}\n{lines}")


class Section(BaseModel):
    # extra="forbid": a typo'd key must be an error, never a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


def whisper_languages() -> dict[str, str]:
    """Whisper's language codes -> names ("es" -> "spanish"), from transformers' own table."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return dict(LANGUAGES)


def language_code(value: str) -> str:
    """Accept "es", "ES" or "spanish"; return the code, or raise with the valid choices."""
    languages = whisper_languages()
    value = value.strip().lower()
    if value in languages:
        return value
    by_name = {name: code for code, name in languages.items()}
    if value in by_name:
        return by_name[value]
    close = difflib.get_close_matches(value, list(languages) + list(by_name), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown Whisper language {value!r}.{hint} Valid codes: {', '.join(sorted(languages))}")


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


class Source(Section):
    """One dataset: a Hub dataset (`hub`), a local audiofolder directory (`path`) or a CSV/TSV/JSONL `manifest`."""

    hub: str | None = Field(None, description="Hub dataset id, e.g. facebook/multilingual_librispeech")
    config: str | None = Field(None, description="Hub dataset configuration, e.g. spanish")
    path: str | None = Field(None, description="local audiofolder directory (metadata.csv + audio files)")
    manifest: str | None = Field(None, description="CSV, TSV or JSONL file: one row per clip, audio paths relative "
                                                   "to the manifest's folder (or absolute)")
    split: str = Field("train", description="split of a Hub dataset or audiofolder (ignored for manifests)")
    audio_column: str = Field("audio", description="column with the audio (a file path in manifests)")
    text_column: str = "transcription"
    language: str | None = Field(None, description="language of this source's targets; default model.language")
    language_column: str | None = Field(None, description="column giving each row's language code (per row)")
    max_samples: int | None = Field(None, gt=0, description="keep the first N rows (smoke runs)")
    name: str | None = Field(None, description="label in logs and reports; derived from the origin + split")
    streaming: bool = Field(False, description="read lazily instead of downloading/preparing it all first "
                                               "(train only; needs train.max_steps)")
    probability: float | None = Field(None, gt=0.0, le=1.0, description="share of this source when "
                                                                        "data.mixing is interleave")
    long_form_s: float | None = Field(None, ge=30.0, le=3600.0, description="test sets only: also score the set "
                                      "long-form, its clips joined in order into files of about this many seconds "
                                      "(WER and segment-boundary error, finetune/longform.py)")
    guard: bool = Field(False, description="test sets only: another domain or language whose WER must not rise "
                                           "by more than eval.guard_threshold points")
    pseudo_label: bool = Field(False, description="replay sources only: no transcripts needed; the base model "
                                                  "transcribes the audio once (cached) and training keeps that")

    @field_validator("language")
    @classmethod
    def _known_language(cls, v: str | None) -> str | None:
        return None if v is None else language_code(v)

    @field_validator("manifest")
    @classmethod
    def _manifest_kind(cls, v: str | None) -> str | None:
        if v is not None and Path(v).suffix.lower() not in MANIFEST_SUFFIXES:
            raise ValueError(f"manifest must end in one of {', '.join(MANIFEST_SUFFIXES)}")
        return v

    @model_validator(mode="after")
    def _one_origin(self) -> Source:
        if sum(x is not None for x in (self.hub, self.path, self.manifest)) != 1:
            raise ValueError("give exactly one of `hub:` (a Hub dataset id), `path:` (a local audiofolder) or "
                             "`manifest:` (a CSV/TSV/JSONL file)")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.manifest:
            return Path(self.manifest).name
        origin = self.hub if self.hub else Path(self.path or "").name
        return f"{origin}{'/' + self.config if self.config else ''}:{self.split}"


MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


class TextNormalization(Section):
    """Optional clean-up of the targets, for references written inconsistently. Off: targets train as written."""

    lowercase: bool = False
    strip_punctuation: bool = False
    unicode_nfc: bool = Field(False, description="compose accents (e + U+0301 -> é) so one spelling has one form")


class WindowConfig(Section):
    """How training clips become Whisper's 30-s training windows (finetune/packing.py).

    none: one clip per window, labels <|notimestamps|> + text (the classic recipe; the frozen-encoder fast path
    applies). single: one clip per window, labelled with timestamps and prompts as below. packed: clips of one
    language packed into each window, so the encoder reads speech instead of padding: 5x the speech trained per
    second on es-synth, timestamps kept (README "Packed windows"). auto: packed when the encoder runs at every step
    anyway, none when the frozen-encoder cache applies.

    The default stays none: a packed window holds ~7 short clips, so an existing recipe's epochs, batch size and
    eval_steps would mean ~7x fewer optimizer steps; choosing packed (or auto) is a decision a recipe states.
    """

    mode: Literal["auto", "none", "single", "packed"] = "none"
    max_window_s: float = Field(MAX_AUDIO_SECONDS, gt=0.0, le=MAX_AUDIO_SECONDS, description="audio per window, s")
    gap_s: float = Field(0.0, ge=0.0, le=2.0, description="silence inserted between packed clips, s")
    timestamp_probability: float = Field(0.5, ge=0.0, le=1.0, description="share of windows labelled with "
                                         "segment timestamps (the rest: <|notimestamps|> and the texts joined)")
    prompt_probability: float = Field(0.2, ge=0.0, le=1.0, description="share of windows that start with "
                                      "<|startofprev|> and the previous window's text (not in the loss)")

    @field_validator("mode", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return "none" if v is False or v is None else v  # YAML reads `off`/`no` as false


class DataConfig(Section):
    train: list[Source] = Field(min_length=1)
    eval: list[Source] = Field(min_length=1, description="scored during training; picks the best adapter")
    test: list[Source] = Field(default_factory=list, description="final report sets; defaults to `eval`")
    max_duration_s: float = Field(MAX_AUDIO_SECONDS, gt=0.0, le=MAX_AUDIO_SECONDS)
    max_label_tokens: int = Field(MAX_TARGET_POSITIONS, gt=PROMPT_TOKENS, le=MAX_TARGET_POSITIONS)
    num_proc: int | None = Field(None, gt=0, description="processes for decoding/tokenizing; None = in-process")
    mixing: Literal["concatenate", "interleave"] = Field(
        "concatenate", description="several train sources: one after another, or interleaved by `probability`")
    normalize: TextNormalization = Field(default_factory=TextNormalization)
    drop_silence: bool = Field(False, description="drop clips whose loudness stays below silence_threshold_db")
    silence_threshold_db: float = Field(-50.0, lt=0.0, description="RMS level in dBFS under which a clip is silent")
    # Stored audio grows with the clip (64 kB per second as float32); a cached 30-s log-mel is ~1 MB per clip
    # whatever its length, and computing log-mel per batch costs milliseconds against a training step's seconds.
    cache_features: bool = Field(False, description="keep 30-s log-mel features in the datasets cache (~1 MB a clip) "
                                                    "instead of the waveform (features computed per batch)")
    # Replay: clips of other languages or domains mixed into every epoch, so training keeps what the base model
    # did there (less forgetting). A replay source with `pseudo_label: true` needs no transcripts.
    windows: WindowConfig = Field(default_factory=WindowConfig)
    replay: list[Source] = Field(default_factory=list, description="other languages/domains mixed into training")
    replay_ratio: float = Field(0.25, gt=0.0, le=4.0, description="replay clips per in-domain training clip "
                                                                  "(drawn with the seed; repeated if too few)")
    # A test set that lost rows (unreadable, missing, too long) scores fewer clips than it claims: any loss is
    # reported at the top of the report; a larger share than this stops the run before training.
    max_test_dropped: float = Field(0.05, ge=0.0, le=1.0, description="share of a test set's rows that may be "
                                                                      "dropped (1 = any)")

    @field_validator("train", "eval", "test", "replay", mode="before")
    @classmethod
    def _wrap(cls, v: Any) -> Any:
        # A single source may be written as a mapping; a list of them is the general form.
        return [v] if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _sources(self) -> DataConfig:
        guards = [s.label for s in self.train + self.eval + self.replay if s.guard]
        if guards:
            raise ValueError(f"sources {guards} are marked guard: only test sets are guards")
        long_form = [s.label for s in self.train + self.eval + self.replay if s.long_form_s]
        if long_form:
            raise ValueError(f"sources {long_form} set long_form_s: only test sets are scored long-form")
        pseudo = [s.label for s in self.train + self.eval + self.test if s.pseudo_label]
        if pseudo:
            raise ValueError(f"sources {pseudo} ask for pseudo_label: only data.replay sources may (train, eval "
                             "and test sets need real transcripts)")
        silent = [s.label for s in self.replay if s.pseudo_label and not (s.language or s.language_column)]
        if silent:
            raise ValueError(f"replay sources {silent} are pseudo-labelled: set `language:` (or `language_column:`), "
                             "the language the base model transcribes it in")
        if self.windows.mode in ("single", "packed") and any(s.streaming for s in self.train):
            raise ValueError(f"data.windows.mode={self.windows.mode} plans windows over the whole training set, "
                             "which needs non-streamed train sources (or data.windows.mode=none)")
        if self.replay and any(s.streaming for s in self.train + self.replay):
            raise ValueError("data.replay is mixed in by count, which needs non-streamed train and replay sources")
        streamed = [s.label for s in self.eval + self.test if s.streaming]
        if streamed:
            raise ValueError(f"eval/test sources {streamed} stream: only train sources may (scores need every row)")
        given = [s.probability for s in self.train]
        if self.mixing == "interleave" and any(p is not None for p in given):
            if None in given or abs(sum(given) - 1.0) > 1e-6:
                raise ValueError(f"interleave probabilities {given} must be set on every train source and sum to 1")
        return self

    @model_validator(mode="after")
    def _unique_test_names(self) -> DataConfig:
        labels = [src.label for src in self.test_sets]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"test sets {repeated} share a name: give each a distinct `name:` (reports key on it)")
        return self

    @property
    def test_sets(self) -> list[Source]:
        return self.test or self.eval


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
    extra: dict[str, Any] = Field(
        default_factory=dict, description="any other Seq2SeqTrainingArguments field, checked by name"
    )

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

    push: bool = Field(False, description="upload at the end of a run (or later: python scripts/push.py RUN_DIR)")
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


def training_argument_names() -> set[str]:
    from transformers import Seq2SeqTrainingArguments

    return {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}


# ---------------------------------------------------------------------------------------------------------------
# Loading


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
        raise RecipeError(source, [describe(e, raw) for e in err.errors()]) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in the nested dict; the value is parsed as YAML (so 5.0e-4 is a float, [a, b] a list)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r}: expected section.key=value, e.g. train.learning_rate=5.0e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"override {item!r}: value is not valid YAML ({err})") from None
    parts = key.strip().split(".")
    parent: Any = None
    node: Any = raw
    for depth, part in enumerate(parts):
        if part.isdigit() and isinstance(node, dict) and isinstance(parent, dict):
            node = parent[parts[depth - 1]] = [node]  # a single source written as a mapping is a list of one
        if depth == len(parts) - 1:
            break
        parent, node = node, _child(node, part, parts[: depth + 1], item)
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, item)] = value
    else:
        node[last] = value


def _child(node: Any, part: str, trail: list[str], item: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, item)]
    if not isinstance(node, dict):
        raise ValueError(f"override {item!r}: {'.'.join(trail[:-1])} is a value, not a section")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(f"override {item!r}: {part!r} is not an index of a list of {len(node)} items")
    return int(part)


def describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    """One pydantic error -> 'key: what is wrong (got value). fix'."""
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_fields(loc[:-1])
        close = suggest(loc[-1], known)
        hint = f"did you mean {'.'.join(loc[:-1] + [close])!r}?" if close else f"valid keys: {', '.join(known)}"
        return f"{key}: unknown key; {hint}"
    if kind == "missing":
        return f"{key}: required but missing; add it to the recipe or pass {key}=... on the command line"
    message = error["msg"].removeprefix("Value error, ")
    got = _lookup(raw, error["loc"])
    if got is _MISSING or (kind == "value_error" and isinstance(got, dict)):  # a cross-field rule of a section
        return f"{key}: {message}"
    return f"{key}: {message} (got {got!r})"


_MISSING = object()


# Short names people type for training keys, from other tools' flags (lr, bs, epochs).
ALIASES = {"lr": "learning_rate", "bs": "per_device_train_batch_size", "batch_size": "per_device_train_batch_size",
           "epochs": "num_train_epochs", "steps": "max_steps", "grad_accum": "gradient_accumulation_steps",
           "accumulation_steps": "gradient_accumulation_steps", "warmup": "warmup_steps", "wd": "weight_decay"}


def suggest(name: str, known: list[str]) -> str | None:
    """The known key `name` was most likely meant to be: a known alias (lr), a close spelling, else one that
    contains it (epochs)."""
    if ALIASES.get(name.lower()) in known:
        return ALIASES[name.lower()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    containing = [k for k in known if name.lower() in k.lower() or k.lower() in name.lower()]
    return containing[0] if len(containing) == 1 else None


def _lookup(raw: Any, loc: tuple) -> Any:
    node = raw
    for part in loc:
        if part == 0 and isinstance(node, dict):
            continue  # a single source written as a mapping stands for a list of one
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _known_fields(loc: list[str]) -> list[str]:
    """Field names of the schema section at `loc` (list indices skipped)."""
    model: type[BaseModel] = Recipe
    for part in loc:
        if part.isdigit():
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        inner = getattr(annotation, "__args__", (annotation,))
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


def dump(recipe: Recipe) -> str:
    """The resolved recipe as YAML, every default filled in (saved next to the outputs)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
