"""The recipe's `data` section: sources (Hub, audiofolder, manifest), text clean-up, training windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from finetune.recipe_sections import Section
from finetune.whisper_spec import MAX_AUDIO_SECONDS, MAX_TARGET_POSITIONS, PROMPT_TOKENS, language_code


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
