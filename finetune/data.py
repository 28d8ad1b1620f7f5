"""Load the recipe's datasets, decode audio to 16 kHz mono, tokenize targets, and drop what cannot train (counted).

Each row becomes: `waveform` (float32, 16 kHz mono), `duration` (s), `text`, `labels` (token ids with the
<|startoftranscript|><|lang|><|task|><|notimestamps|> prefix and <|endoftext|>). A bad clip never stops a run: it
is dropped with a reason, and the reasons are counted per source.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
from datasets import Audio, Dataset, Features, List, Value, concatenate_datasets, load_dataset

from finetune.hub import hub_problem
from finetune.recipe import DataConfig, RecipeError, Source

SAMPLE_RATE = 16_000  # Hz: what Whisper's feature extractor expects
PREP_VERSION = "1"  # bump when prepare_row changes, so cached results are not reused
KEEP = ""  # drop reason of a row that is kept
# Declared, not inferred: a batch of dropped rows (empty waveforms) must not decide the column types.
PREPARED_FEATURES = Features({
    "waveform": List(Value("float32")),
    "duration": Value("float32"),
    "text": Value("string"),
    "labels": List(Value("int32")),
    "drop": Value("string"),
})


@dataclass
class SourceCount:
    """What one source contributed: rows read, rows kept, rows dropped per reason, audio hours kept."""

    split: str
    source: str
    rows: int = 0
    kept: int = 0
    hours: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class PreparedData:
    train: Dataset
    eval: Dataset
    test: dict[str, Dataset]
    counts: list[SourceCount]


def load_source(src: Source) -> Dataset:
    """The raw dataset of one source, with its audio column left undecoded (we decode it ourselves)."""
    ds = _load_hub(src) if src.hub else _load_audiofolder(src)
    missing = [c for c in (src.audio_column, src.text_column) if c not in ds.column_names]
    if missing:
        raise RecipeError("data", [
            f"{src.label}: column(s) {missing} not found; the dataset has {ds.column_names}. "
            f"Set audio_column / text_column on this source."
        ])
    if src.max_samples is not None:
        ds = ds.select(range(min(src.max_samples, len(ds))))
    ds = ds.select_columns([src.audio_column, src.text_column])
    return ds.cast_column(src.audio_column, Audio(decode=False))


def _load_audiofolder(src: Source) -> Dataset:
    root = Path(src.path or "").expanduser()
    if not root.is_dir():
        raise RecipeError("data", [f"{src.label}: path {str(root.resolve())!r} is not a directory"])
    try:
        return load_dataset("audiofolder", data_dir=str(root), split=src.split)
    except Exception as err:  # no audio files, bad metadata.csv, unknown split, ...
        raise RecipeError("data", [f"{src.label}: could not load audiofolder {src.path!r}: "
                                   f"{type(err).__name__}: {err}"]) from None


def _load_hub(src: Source) -> Dataset:
    """A Hub dataset; when the Hub is away (checked once, quickly), straight from the local cache or a clear error."""
    import datasets.config

    problem = hub_problem(src.hub or "", "dataset")
    offline = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = offline or problem is not None  # no minutes of retries against a dead Hub
    try:
        return load_dataset(src.hub, src.config, split=src.split)
    except Exception as err:  # not found, not cached, bad config or split, ...
        why = f"{problem}, and it is not in the local cache" if problem else f"{type(err).__name__}: {err}"
        raise RecipeError("data", [f"{src.label}: could not load Hub dataset {src.hub!r} ({why}). Check the id, "
                                   f"config and split, or use a local copy (`path:` to an audiofolder)."]) from None
    finally:
        datasets.config.HF_HUB_OFFLINE = offline


def decode_audio(value: dict[str, Any]) -> np.ndarray:
    """An undecoded audio cell ({"path", "bytes"}) -> float32 mono waveform at 16 kHz."""
    from torchcodec.decoders import AudioDecoder

    source = value.get("bytes") or value.get("path")
    if not source:
        raise ValueError("the audio cell has neither bytes nor a path")
    samples = AudioDecoder(source, sample_rate=SAMPLE_RATE, num_channels=1).get_all_samples()
    return samples.data[0].numpy().astype(np.float32, copy=False)


def prepare_row(audio: dict[str, Any], text: str | None, tokenizer: Any, cfg: DataConfig) -> dict[str, Any]:
    """Decode, measure and tokenize one row; set `drop` to the reason it cannot train, or KEEP."""
    no_audio = np.zeros(0, dtype=np.float32)  # typed, so kept and dropped rows share one Arrow type
    row: dict[str, Any] = {"waveform": no_audio, "duration": 0.0, "text": (text or "").strip(), "labels": [],
                           "drop": KEEP}
    if not row["text"]:
        row["drop"] = "empty transcript"
        return row
    try:
        waveform = decode_audio(audio)
    except Exception:  # corrupt, truncated, missing or unsupported file: one bad clip must not stop a run
        row["drop"] = "unreadable audio"
        return row
    row["duration"] = len(waveform) / SAMPLE_RATE
    row["labels"] = tokenizer(row["text"]).input_ids
    if row["duration"] <= 0.0:
        row["drop"] = "no audio (0 s)"
    elif row["duration"] > cfg.max_duration_s:
        row["drop"] = f"longer than {cfg.max_duration_s:g} s"
    elif len(row["labels"]) - 1 > cfg.max_label_tokens:  # -1: the decoder start token is not a label
        row["drop"] = f"more than {cfg.max_label_tokens} label tokens"
    else:
        row["waveform"] = waveform
    return row


def _fingerprint(ds: Dataset, tokenizer: Any, cfg: DataConfig) -> str:
    """Deterministic cache key, so re-runs and the other ranks reuse the main process's work."""
    key = [ds._fingerprint, tokenizer.name_or_path, tokenizer.prefix_tokens, cfg.max_duration_s,
           cfg.max_label_tokens, PREP_VERSION]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]


def prepare_source(src: Source, split: str, tokenizer: Any, cfg: DataConfig) -> tuple[Dataset, SourceCount]:
    raw = load_source(src)
    prepared = raw.map(
        prepare_row,
        input_columns=[src.audio_column, src.text_column],
        fn_kwargs={"tokenizer": tokenizer, "cfg": cfg},
        remove_columns=raw.column_names,
        features=PREPARED_FEATURES,
        num_proc=cfg.num_proc,
        new_fingerprint=_fingerprint(raw, tokenizer, cfg),
        desc=f"Preparing {split} {src.label}",
    )
    reasons = Counter(prepared["drop"])
    kept = prepared.filter(lambda reason: reason == KEEP, input_columns="drop").remove_columns("drop")
    count = SourceCount(split=split, source=src.label, rows=len(prepared), kept=len(kept),
                        hours=float(sum(kept["duration"])) / 3600,
                        dropped={r: n for r, n in sorted(reasons.items()) if r != KEEP})
    return kept, count


def prepare_split(sources: list[Source], split: str, tokenizer: Any, cfg: DataConfig) -> tuple[Dataset, list]:
    parts, counts = zip(*(prepare_source(s, split, tokenizer, cfg) for s in sources))
    return concatenate_datasets(list(parts)), list(counts)


def load_data(cfg: DataConfig, tokenizer: Any,
              main_process_first: Callable[[], ContextManager] = contextlib.nullcontext) -> PreparedData:
    """Train, eval and test data ready for the collator, plus what was kept and dropped per source."""
    with main_process_first():
        train, train_counts = prepare_split(cfg.train, "train", tokenizer, cfg)
        evaluation, eval_counts = prepare_split(cfg.eval, "eval", tokenizer, cfg)
        test, test_counts = {}, []
        for src in cfg.test_sets:
            test[src.label], count = prepare_source(src, "test", tokenizer, cfg)
            test_counts.append(count)
    counts = train_counts + eval_counts + test_counts
    empty = [c.source for c in counts if c.kept == 0]
    if empty:
        raise RecipeError("data", [f"{name}: no usable rows left after filtering" for name in empty]
                          + ["what was kept and dropped:\n" + counts_table(counts)])
    return PreparedData(train=train, eval=evaluation, test=test, counts=counts)


def first_waveforms(dataset: Dataset, n: int) -> list:
    """The first n waveforms (reads only those rows)."""
    return dataset.select(range(min(n, len(dataset))))["waveform"]


def counts_table(counts: list[SourceCount]) -> str:
    """A Markdown table: one line per split and source, kept and dropped rows with reasons."""
    lines = ["| split | source | rows | kept | hours kept | dropped (reason: rows) |", "|---|---|---|---|---|---|"]
    for c in counts:
        dropped = ", ".join(f"{r}: {n}" for r, n in c.dropped.items()) or "none"
        lines.append(f"| {c.split} | {c.source} | {c.rows} | {c.kept} | {c.hours:.3f} | {dropped} |")
    return "\n".join(lines)
