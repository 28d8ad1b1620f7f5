"""One row at a time: decode, measure, normalize and tokenize; the reason a row cannot train, or KEEP.

Each kept row holds `input_features` (log-mel, when cached) or `waveform` (float32, 16 kHz mono), `duration` (s),
`text`, `language`, `labels` (token ids with the <|startoftranscript|><|lang|><|task|><|notimestamps|> prefix and
<|endoftext|>) and `ref` (its audio path). Prepared sources are cached by the datasets library under a key of
everything that decides the result, so re-runs and the other ranks reuse the main process's work.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import Counter
from typing import Any

import numpy as np
from datasets import Array2D, Dataset, Features, IterableDataset, List, Value

from finetune.audio import decode_audio, drop_reason_for_file, loudness_db
from finetune.data_counts import SourceCount
from finetune.recipe import SAMPLE_RATE, DataConfig, Source, TextNormalization, whisper_languages
from finetune.sources import load_source

PREP_VERSION = "2"  # bump when prepare_row changes, so cached results are not reused
KEEP = ""  # drop reason of a row that is kept
FEATURE_WRITER_BATCH = 64  # rows per Arrow write when storing features (~1 MB each): bounds RAM
WAVEFORM_WRITER_BATCH = 100  # rows per Arrow write when storing waveforms (64 kB per second of audio)


def prefix_ids(tokenizer: Any, language: str, task: str) -> list[int]:
    """<|startoftranscript|><|language|><|task|><|notimestamps|>: what a transcript without timestamps follows."""
    return tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", f"<|{language}|>", f"<|{task}|>",
                                            "<|notimestamps|>"])


def label_ids(tokenizer: Any, text: str, language: str) -> list[int]:
    """The prefix, the text and <|endoftext|>, for any row's language."""
    text_ids = tokenizer(text, add_special_tokens=False).input_ids
    return prefix_ids(tokenizer, language, tokenizer.task or "transcribe") + text_ids + [tokenizer.eos_token_id]


def normalize_text(text: str, cfg: TextNormalization) -> str:
    """The recipe's optional target clean-up; with everything off, only surrounding whitespace goes."""
    if cfg.unicode_nfc:
        text = unicodedata.normalize("NFC", text)
    if cfg.lowercase:
        text = text.lower()
    if cfg.strip_punctuation:
        text = " ".join("".join(" " if unicodedata.category(c).startswith("P") else c for c in text).split())
    return text.strip()


def row_schema(feature_extractor: Any, store_features: bool) -> Features:
    """Columns of a prepared row. Declared, not inferred: a batch of dropped rows must not decide the types."""
    audio = ({"input_features": Array2D((feature_extractor.feature_size, feature_extractor.nb_max_frames), "float32")}
             if store_features else {"waveform": List(Value("float32"))})
    return Features({**audio, "duration": Value("float32"), "text": Value("string"), "labels": List(Value("int32")),
                     "language": Value("string"), "ref": Value("string"), "drop": Value("string")})


def prepare_row(audio: dict[str, Any] | None, text: Any, language: Any = None, *, index: int, processor: Any,
                cfg: DataConfig, default_language: str, store_features: bool,
                unlabeled: bool = False) -> dict[str, Any]:
    """Decode, measure and tokenize one row; set `drop` to the reason it cannot train, or KEEP.

    Kept rows carry their log-mel `input_features` (store_features) or their 16 kHz `waveform`. `unlabeled` rows
    (pseudo-labelled replay) have no transcript yet: text and labels are filled in later (finetune/replay.py).
    """
    extractor = processor.feature_extractor
    language = str(language).strip().lower() if language else default_language
    text = normalize_text("" if text is None else str(text), cfg.normalize)
    row: dict[str, Any] = {"duration": 0.0, "text": text, "labels": [], "language": language,
                           "ref": (audio or {}).get("path") or f"row {index}", "drop": KEEP}
    # Typed placeholders, so kept and dropped rows share one Arrow type.
    row.update({"input_features": np.zeros((extractor.feature_size, extractor.nb_max_frames), np.float32)}
               if store_features else {"waveform": np.zeros(0, np.float32)})
    if not text and not unlabeled:
        row["drop"] = "empty transcript"
        return row
    if language not in whisper_languages():
        row["drop"] = f"unknown language code {language!r}"
        return row
    row["drop"] = drop_reason_for_file(audio) or KEEP
    if row["drop"] != KEEP:
        return row
    try:
        waveform = decode_audio(audio)
    except Exception as err:  # corrupt, truncated or unsupported file: one bad clip must not stop a run
        row["drop"] = "no audio stream" if "audio stream" in str(err).lower() else "unreadable audio"
        return row
    row["duration"] = len(waveform) / SAMPLE_RATE
    row["labels"] = [] if unlabeled else label_ids(processor.tokenizer, text, language)
    if row["duration"] <= 0.0:
        row["drop"] = "no audio (0 s)"
    elif row["duration"] > cfg.max_duration_s:
        row["drop"] = f"longer than {cfg.max_duration_s:g} s"
    elif len(row["labels"]) - 1 > cfg.max_label_tokens:  # -1: the decoder start token is not a label
        row["drop"] = f"more than {cfg.max_label_tokens} label tokens"
    elif cfg.drop_silence and loudness_db(waveform) < cfg.silence_threshold_db:
        row["drop"] = f"silence (below {cfg.silence_threshold_db:g} dBFS)"
    elif store_features:
        row["input_features"] = extractor(waveform, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    else:
        row["waveform"] = waveform
    return row


def _fingerprint(ds: Dataset, processor: Any, cfg: DataConfig, language: str, store_features: bool,
                 unlabeled: bool) -> str:
    """Deterministic cache key, so re-runs and the other ranks reuse the main process's work."""
    key = [ds._fingerprint, processor.tokenizer.name_or_path, processor.tokenizer.prefix_tokens, language,
           processor.feature_extractor.to_dict(), cfg.max_duration_s, cfg.max_label_tokens, cfg.normalize.model_dump(),
           cfg.drop_silence, cfg.silence_threshold_db, store_features, unlabeled, PREP_VERSION]
    return hashlib.sha256(json.dumps(key, default=str, sort_keys=True).encode()).hexdigest()[:16]


def prepare_source(src: Source, split: str, processor: Any, cfg: DataConfig,
                   store_features: bool) -> tuple[Dataset | IterableDataset, SourceCount]:
    raw = load_source(src)
    language = src.language or processor.tokenizer.language or "en"
    columns = (src.audio_column, None if src.pseudo_label else src.text_column, src.language_column)
    options = dict(
        with_indices=True,
        fn_kwargs={"processor": processor, "cfg": cfg, "default_language": language, "store_features": store_features,
                   "unlabeled": src.pseudo_label},
        remove_columns=raw.column_names,
        features=row_schema(processor.feature_extractor, store_features),
    )
    prepare = (lambda example, index, **kwargs:  # noqa: E731
               prepare_row(*(example.get(c) if c else None for c in columns), index=index, **kwargs))
    if src.streaming:  # lazily, row by row as training reads it: nothing to count in advance
        prepared = raw.map(prepare, **options)
        kept = prepared.filter(lambda reason: reason == KEEP, input_columns="drop").remove_columns(["drop", "ref"])
        return kept, SourceCount(split=split, source=src.label, streamed=True)
    prepared = raw.map(
        prepare, **options, num_proc=cfg.num_proc, new_fingerprint=_fingerprint(raw, processor, cfg, language,
                                                                                 store_features, src.pseudo_label),
        writer_batch_size=FEATURE_WRITER_BATCH if store_features else WAVEFORM_WRITER_BATCH,
        desc=f"Preparing {split} {src.label}",
    )
    reasons = prepared["drop"]
    dropped_at = [i for i, reason in enumerate(reasons) if reason != KEEP]
    dropped_rows = [{"split": split, "source": src.label, "row": i, "audio": r["ref"], "text": r["text"][:200],
                     "reason": r["drop"]} for i, r in zip(dropped_at, prepared.select(dropped_at)
                                                           .select_columns(["ref", "text", "drop"]))]
    # `ref` (the audio path) stays: reports embed the worst utterances' audio.
    kept = prepared.filter(lambda reason: reason == KEEP, input_columns="drop").remove_columns(["drop"])
    if store_features:
        kept = numpy_features(kept)
    count = SourceCount(split=split, source=src.label, rows=len(prepared), kept=len(kept),
                        hours=float(sum(kept["duration"])) / 3600,
                        dropped=dict(sorted(Counter(r["reason"] for r in dropped_rows).items())),
                        dropped_rows=dropped_rows)
    return kept, count


def numpy_features(ds: Dataset) -> Dataset:
    """Rows read with `input_features` as numpy arrays (the collator stacks them), other columns as stored."""
    return ds.with_format("numpy", columns=["input_features"], output_all_columns=True)
