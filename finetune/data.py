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
from finetune.outputs import write_text
from finetune.recipe import DataConfig, RecipeError, Source, whisper_languages

SAMPLE_RATE = 16_000  # Hz: what Whisper's feature extractor expects
PREP_VERSION = "1"  # bump when prepare_row changes, so cached results are not reused
KEEP = ""  # drop reason of a row that is kept
# Declared, not inferred: a batch of dropped rows (empty waveforms) must not decide the column types.
PREPARED_FEATURES = Features({
    "waveform": List(Value("float32")),
    "duration": Value("float32"),
    "text": Value("string"),
    "labels": List(Value("int32")),
    "language": Value("string"),
    "ref": Value("string"),  # where the row came from (audio path or row number), for the dropped-rows file
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
    dropped_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass
class PreparedData:
    train: Dataset
    eval: Dataset
    test: dict[str, Dataset]
    counts: list[SourceCount]


def load_source(src: Source) -> Dataset:
    """The raw dataset of one source, with its audio column left undecoded (we decode it ourselves)."""
    ds = _load_hub(src) if src.hub else _load_manifest(src) if src.manifest else _load_audiofolder(src)
    wanted = [src.audio_column, src.text_column] + ([src.language_column] if src.language_column else [])
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise RecipeError("data", [
            f"{src.label}: column(s) {missing} not found; the dataset has {ds.column_names}. "
            f"Set audio_column / text_column / language_column on this source."
        ])
    if src.max_samples is not None:
        ds = ds.select(range(min(src.max_samples, len(ds))))
    ds = ds.select_columns(wanted)
    return ds.cast_column(src.audio_column, Audio(decode=False))


def _load_manifest(src: Source) -> Dataset:
    """A CSV/TSV/JSONL manifest; relative audio paths are resolved against the manifest's folder."""
    path = Path(src.manifest or "").expanduser()
    if not path.is_file():
        raise RecipeError("data", [f"{src.label}: manifest {str(path.resolve())!r} not found"])
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError("data", [
            f"{src.label}: manifest {str(path)!r} is not UTF-8 (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}). Re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}"
        ]) from None
    suffix = path.suffix.lower()
    builder, options = ("json", {}) if suffix in {".jsonl", ".json"} else ("csv", {"sep": "\t" if suffix == ".tsv"
                                                                                  else ","})
    try:
        ds = load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as err:
        raise RecipeError("data", [f"{src.label}: could not parse manifest {str(path)!r}: "
                                   f"{type(err).__name__}: {err}"]) from None
    if src.audio_column in ds.column_names:
        folder = str(path.resolve().parent)
        ds = ds.map(lambda p: {src.audio_column: resolve_path(folder, p)}, input_columns=src.audio_column,
                    desc=f"Resolving audio paths of {src.label}")
        ds = ds.cast_column(src.audio_column, Value("string"))  # JSON gives large_string, which Audio rejects
    return ds


def resolve_path(folder: str, value: Any) -> str | None:
    """A manifest's audio path, absolute (relative ones are taken from the manifest's folder)."""
    if value is None or not str(value).strip():
        return None
    path = Path(str(value).strip()).expanduser()
    return str(path if path.is_absolute() else Path(folder) / path)


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


def label_ids(tokenizer: Any, text: str, language: str) -> list[int]:
    """<|startoftranscript|><|language|><|task|><|notimestamps|> text <|endoftext|>, for any row's language."""
    prefix = ["<|startoftranscript|>", f"<|{language}|>", f"<|{tokenizer.task or 'transcribe'}|>", "<|notimestamps|>"]
    text_ids = tokenizer(text, add_special_tokens=False).input_ids
    return tokenizer.convert_tokens_to_ids(prefix) + text_ids + [tokenizer.eos_token_id]


def drop_reason_for_file(audio: dict[str, Any] | None) -> str | None:
    """Why an audio cell cannot be read before trying to decode it, or None."""
    if not audio or not (audio.get("bytes") or audio.get("path")):
        return "no audio path"
    if audio.get("bytes"):
        return None
    path = Path(audio["path"])
    if not path.is_file():
        return "missing audio file"
    return "empty audio file (0 bytes)" if path.stat().st_size == 0 else None


def prepare_row(audio: dict[str, Any] | None, text: Any, language: Any = None, *, index: int, tokenizer: Any,
                cfg: DataConfig, default_language: str) -> dict[str, Any]:
    """Decode, measure and tokenize one row; set `drop` to the reason it cannot train, or KEEP."""
    no_audio = np.zeros(0, dtype=np.float32)  # typed, so kept and dropped rows share one Arrow type
    language = str(language).strip().lower() if language else default_language
    row: dict[str, Any] = {"waveform": no_audio, "duration": 0.0, "text": "" if text is None else str(text).strip(),
                           "labels": [], "language": language, "ref": (audio or {}).get("path") or f"row {index}",
                           "drop": KEEP}
    if not row["text"]:
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
    except Exception:  # corrupt, truncated or unsupported file: one bad clip must not stop a run
        row["drop"] = "unreadable audio"
        return row
    row["duration"] = len(waveform) / SAMPLE_RATE
    row["labels"] = label_ids(tokenizer, row["text"], language)
    if row["duration"] <= 0.0:
        row["drop"] = "no audio (0 s)"
    elif row["duration"] > cfg.max_duration_s:
        row["drop"] = f"longer than {cfg.max_duration_s:g} s"
    elif len(row["labels"]) - 1 > cfg.max_label_tokens:  # -1: the decoder start token is not a label
        row["drop"] = f"more than {cfg.max_label_tokens} label tokens"
    else:
        row["waveform"] = waveform
    return row


def _fingerprint(ds: Dataset, tokenizer: Any, cfg: DataConfig, language: str) -> str:
    """Deterministic cache key, so re-runs and the other ranks reuse the main process's work."""
    key = [ds._fingerprint, tokenizer.name_or_path, tokenizer.prefix_tokens, language, cfg.max_duration_s,
           cfg.max_label_tokens, PREP_VERSION]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]


def prepare_source(src: Source, split: str, tokenizer: Any, cfg: DataConfig) -> tuple[Dataset, SourceCount]:
    raw = load_source(src)
    language = src.language or tokenizer.language or "en"
    columns = (src.audio_column, src.text_column, src.language_column)
    prepared = raw.map(
        lambda example, index, **kwargs: prepare_row(*(example.get(c) if c else None for c in columns),
                                                     index=index, **kwargs),
        with_indices=True,
        fn_kwargs={"tokenizer": tokenizer, "cfg": cfg, "default_language": language},
        remove_columns=raw.column_names,
        features=PREPARED_FEATURES,
        num_proc=cfg.num_proc,
        new_fingerprint=_fingerprint(raw, tokenizer, cfg, language),
        desc=f"Preparing {split} {src.label}",
    )
    reasons = prepared["drop"]
    dropped_at = [i for i, reason in enumerate(reasons) if reason != KEEP]
    dropped_rows = [{"split": split, "source": src.label, "row": i, "audio": r["ref"], "text": r["text"][:200],
                     "reason": r["drop"]} for i, r in zip(dropped_at, prepared.select(dropped_at)
                                                           .select_columns(["ref", "text", "drop"]))]
    kept = prepared.filter(lambda reason: reason == KEEP, input_columns="drop").remove_columns(["drop", "ref"])
    count = SourceCount(split=split, source=src.label, rows=len(prepared), kept=len(kept),
                        hours=float(sum(kept["duration"])) / 3600,
                        dropped=dict(sorted(Counter(r["reason"] for r in dropped_rows).items())),
                        dropped_rows=dropped_rows)
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


def save_data_report(output_dir: str, counts: list[SourceCount]) -> Path:
    """<output_dir>/dropped_rows.jsonl: every dropped row with its split, source, audio and reason."""
    lines = [json.dumps(row, ensure_ascii=False) for c in counts for row in c.dropped_rows]
    path = Path(output_dir) / "dropped_rows.jsonl"
    write_text(path, "".join(line + "\n" for line in lines))
    return path


def counts_table(counts: list[SourceCount]) -> str:
    """A Markdown table: one line per split and source, kept and dropped rows with reasons."""
    lines = ["| split | source | rows | kept | hours kept | dropped (reason: rows) |", "|---|---|---|---|---|---|"]
    for c in counts:
        dropped = ", ".join(f"{r}: {n}" for r, n in c.dropped.items()) or "none"
        lines.append(f"| {c.split} | {c.source} | {c.rows} | {c.kept} | {c.hours:.3f} | {dropped} |")
    return "\n".join(lines)
