"""Load the recipe's datasets, decode audio to 16 kHz mono, tokenize targets, and drop what cannot train (counted).

Sources: Hub datasets, local audiofolders, CSV/TSV/JSONL manifests. Each row becomes `input_features` (log-mel,
cached) or `waveform` (float32, 16 kHz mono), `duration` (s), `text`, `language`, `labels` (token ids with the
<|startoftranscript|><|lang|><|task|><|notimestamps|> prefix and <|endoftext|>). A bad clip never stops a run: it
is dropped with a reason, and the reasons are counted per source and listed row by row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
import torch
from datasets import (Array2D, Audio, Dataset, Features, IterableDataset, List, Value, concatenate_datasets,
                      interleave_datasets, load_dataset)

from finetune.hub import hub_problem
from finetune.outputs import log, write_text
from finetune.packing import TrainingWindows, longest_stretch
from finetune.recipe import (MAX_AUDIO_SECONDS, SAMPLE_RATE, AugmentConfig, DataConfig, RecipeError, Source,
                             TextNormalization, whisper_languages)

PREP_VERSION = "2"  # bump when prepare_row changes, so cached results are not reused
KEEP = ""  # drop reason of a row that is kept
FEATURE_WRITER_BATCH = 64  # rows per Arrow write when storing features (~1 MB each): bounds RAM
WAVEFORM_WRITER_BATCH = 100  # rows per Arrow write when storing waveforms (64 kB per second of audio)


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
    streamed: bool = False  # read lazily while training: not counted in advance


@dataclass
class PreparedData:
    train: Dataset | IterableDataset | TrainingWindows
    eval: Dataset
    test: dict[str, Dataset]
    counts: list[SourceCount]


def load_source(src: Source) -> Dataset | IterableDataset:
    """The raw dataset of one source, with its audio column left undecoded (we decode it ourselves)."""
    ds = _load_hub(src) if src.hub else _load_manifest(src) if src.manifest else _load_audiofolder(src)
    wanted = [src.audio_column] + ([] if src.pseudo_label else [src.text_column]) + \
        ([src.language_column] if src.language_column else [])
    missing = [c for c in wanted if c not in (ds.column_names or [])]
    if missing:
        raise RecipeError("data", [
            f"{src.label}: column(s) {missing} not found; the dataset has {ds.column_names}. "
            f"Set audio_column / text_column / language_column on this source."
        ])
    if src.max_samples is not None:
        ds = ds.take(src.max_samples) if src.streaming else ds.select(range(min(src.max_samples, len(ds))))
    ds = ds.select_columns(wanted)
    return ds.cast_column(src.audio_column, Audio(decode=False))


def _load_manifest(src: Source) -> Dataset:
    """A CSV/TSV/JSONL manifest; relative audio paths are resolved against the manifest's folder."""
    path = Path(src.manifest or "").expanduser()
    if not path.is_file():
        raise RecipeError("data", [f"{src.label}: manifest {str(path.resolve())!r} not found"])
    lines = [line for line in utf8_text(path, src.label).splitlines() if line.strip()]
    suffix = path.suffix.lower()
    if len(lines) <= (0 if suffix in {".jsonl", ".json"} else 1):  # CSV/TSV: the first line is the header
        raise RecipeError("data", [f"{src.label}: manifest {str(path)!r} has no rows"
                                   f"{' (only a header line)' if lines else ' (the file is empty)'}"])
    builder, options = ("json", {}) if suffix in {".jsonl", ".json"} else ("csv", {"sep": "\t" if suffix == ".tsv"
                                                                                  else ","})
    try:
        ds = load_dataset(builder, data_files=str(path), split="train", streaming=src.streaming, **options)
    except Exception as err:
        raise RecipeError("data", [f"{src.label}: could not parse manifest {str(path)!r}: "
                                   f"{type(err).__name__}: {err}"]) from None
    if src.audio_column in (ds.column_names or []):
        folder = str(path.resolve().parent)
        ds = ds.map(lambda p: {src.audio_column: resolve_path(folder, p)}, input_columns=src.audio_column,
                    **({} if src.streaming else {"desc": f"Resolving audio paths of {src.label}"}))
        ds = ds.cast_column(src.audio_column, Value("string"))  # JSON gives large_string, which Audio rejects
    return ds


def utf8_text(path: Path, label: str) -> str:
    """A text file's content, or an error naming the first byte that is not UTF-8 and how to convert the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError("data", [
            f"{label}: {str(path)!r} is not UTF-8 (byte {err.object[err.start]:#04x} at offset {err.start}). "
            f"Re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}"
        ]) from None


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
    for metadata in [*root.glob("metadata.*"), *root.glob("*/metadata.*")]:
        utf8_text(metadata, src.label)
    try:
        return load_dataset("audiofolder", data_dir=str(root), split=src.split, streaming=src.streaming)
    except Exception as err:  # no audio files, bad metadata.csv, unknown split, ...
        raise RecipeError("data", [f"{src.label}: could not load audiofolder {src.path!r}: "
                                   f"{type(err).__name__}: {err}. An audiofolder holds audio files and a "
                                   f"metadata.csv (file_name,transcription), in split folders or directly."]) from None


def _load_hub(src: Source) -> Dataset:
    """A Hub dataset; when the Hub is away (checked once, quickly), straight from the local cache or a clear error."""
    import datasets.config

    problem = hub_problem(src.hub or "", "dataset")
    offline = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = offline or problem is not None  # no minutes of retries against a dead Hub
    try:
        return load_dataset(src.hub, src.config, split=src.split, streaming=src.streaming)
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


def normalize_text(text: str, cfg: TextNormalization) -> str:
    """The recipe's optional target clean-up; with everything off, only surrounding whitespace goes."""
    if cfg.unicode_nfc:
        text = unicodedata.normalize("NFC", text)
    if cfg.lowercase:
        text = text.lower()
    if cfg.strip_punctuation:
        text = " ".join("".join(" " if unicodedata.category(c).startswith("P") else c for c in text).split())
    return text.strip()


def loudness_db(waveform: np.ndarray) -> float:
    """RMS level in dBFS (0 dB = full scale)."""
    return float(20 * np.log10(np.sqrt(np.mean(np.square(waveform, dtype=np.float64))) + 1e-10))


def drop_reason_for_file(audio: dict[str, Any] | None) -> str | None:
    """Why an audio cell cannot be read before trying to decode it, or None."""
    if not audio or not (audio.get("bytes") or audio.get("path")):
        return "no audio path"
    if audio.get("bytes"):
        return None
    path = Path(audio["path"])
    if path.is_dir():
        return "a directory, not an audio file"
    if not path.is_file():
        return "missing audio file"
    return "empty audio file (0 bytes)" if path.stat().st_size == 0 else None


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


def combine(parts: list, sources: list[Source], mixing: str, seed: int) -> Dataset | IterableDataset:
    """One dataset from several: concatenated, or interleaved by the sources' probabilities (equal if unset)."""
    if len(parts) == 1:
        return parts[0]
    if any(isinstance(p, IterableDataset) for p in parts):
        parts = [p if isinstance(p, IterableDataset) else p.with_format(None).to_iterable_dataset() for p in parts]
    if mixing == "concatenate":
        return concatenate_datasets(parts)
    given = [s.probability for s in sources]
    probabilities = None if None in given else given
    # all_exhausted: small sources are repeated until the largest one is used up, so no row is never seen.
    return interleave_datasets(parts, probabilities=probabilities, seed=seed, stopping_strategy="all_exhausted")


def prepare_split(sources: list[Source], split: str, processor: Any, cfg: DataConfig, store_features: bool,
                  seed: int) -> tuple[Dataset | IterableDataset, list[SourceCount]]:
    prepared = [prepare_source(s, split, processor, cfg, store_features) for s in sources]
    return combine([p for p, _ in prepared], sources, cfg.mixing, seed), [c for _, c in prepared]


def load_data(cfg: DataConfig, processor: Any, augment: AugmentConfig | None = None, seed: int = 42,
              main_process_first: Callable[[], ContextManager] = contextlib.nullcontext,
              labeler: Callable[[Dataset, SourceCount], Dataset] | None = None) -> PreparedData:
    """Train, eval and test data ready for the collator, plus what was kept and dropped per source.

    Train rows keep their waveform (features on the fly) when waveform augmentation is on or features are not
    cached; eval and test rows store features whenever `cache_features` is on. Replay sources are mixed into
    train (finetune/replay.py); `labeler` transcribes those with `pseudo_label: true`.
    """
    augment = augment or AugmentConfig()
    # Windows concatenate clips' waveforms, so their train rows keep the audio (at its own length, not 30 s).
    train_features = cfg.cache_features and not augment.on_waveform and cfg.windows.mode == "none"
    with main_process_first():
        train, train_counts = prepare_split(cfg.train, "train", processor, cfg, train_features, seed)
        replay, replay_counts = prepare_replay(cfg, processor, train_features, labeler)
        evaluation, eval_counts = prepare_split(cfg.eval, "eval", processor, cfg, cfg.cache_features, seed)
        test, test_counts = load_test_sets(cfg, processor)
    train = mix_replay(train, replay, cfg.replay_ratio, seed)
    counts = train_counts + replay_counts + eval_counts + test_counts
    empty = [c.source for c in counts if c.kept == 0 and not c.streamed]
    if empty:
        raise RecipeError("data", [f"{name}: no usable rows left after filtering" for name in empty]
                          + ["what was kept and dropped:\n" + counts_table(counts)])
    if augment.on_waveform:
        perturb = WaveformAugment(augment)
        train = train.map(perturb) if isinstance(train, IterableDataset) else train.with_transform(perturb.batch)
    if cfg.windows.mode != "none":
        train = TrainingWindows(train, processor.tokenizer, cfg.windows, processor.tokenizer.task or "transcribe",
                                seed, longest_stretch(augment.speed_prob, augment.speed_range))
        log.info("Training windows (%s): %d clips in %d windows this epoch, %.1f s of speech per window",
                 cfg.windows.mode, len(train.durations), len(train), train.speech_seconds())
    return PreparedData(train=train, eval=evaluation, test=test, counts=counts)


def prepare_replay(cfg: DataConfig, processor: Any, store_features: bool,
                   labeler: Callable[[Dataset, SourceCount], Dataset] | None) -> tuple[Dataset | None, list[SourceCount]]:
    """The replay sources, prepared like train rows; `pseudo_label` ones transcribed by `labeler` (cached)."""
    parts, counts = [], []
    for src in cfg.replay:
        kept, count = prepare_source(src, "replay", processor, cfg, store_features)
        if src.pseudo_label:
            if labeler is None:
                raise RecipeError("data", [f"{src.label}: pseudo_label needs the base model to transcribe it; this "
                                           "entry point has none (use finetune/run.py)"])
            kept = labeler(kept, count)
        parts.append(kept)
        counts.append(count)
    return (concatenate_datasets(parts) if len(parts) > 1 else parts[0] if parts else None), counts


def mix_replay(train: Dataset | IterableDataset, replay: Dataset | None, ratio: float,
               seed: int) -> Dataset | IterableDataset:
    """`train` plus round(ratio x len(train)) replay rows drawn with the seed (repeated when the pool is smaller);
    the Trainer shuffles the mixture every epoch."""
    if replay is None or len(replay) == 0:
        return train
    wanted = max(1, round(ratio * len(train)))
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(replay))[:wanted] if wanted <= len(replay) else \
        rng.integers(0, len(replay), size=wanted)
    mixed = concatenate_datasets([train.with_format(None), replay.with_format(None).select(picks.tolist())])
    return numpy_features(mixed) if "input_features" in mixed.column_names else mixed


def load_test_sets(cfg: DataConfig, processor: Any,
                   names: list[str] | None = None) -> tuple[dict[str, Dataset], list[SourceCount]]:
    """The recipe's test sets (or those named), prepared for scoring, by name."""
    sources = [src for src in cfg.test_sets if names is None or src.label in names]
    unknown = sorted(set(names or []) - {src.label for src in cfg.test_sets})
    if unknown:
        raise RecipeError("data", [f"no test set named {unknown}; the recipe has "
                                   f"{[src.label for src in cfg.test_sets]}"])
    prepared = {src.label: prepare_source(src, "test", processor, cfg, cfg.cache_features) for src in sources}
    counts = [count for _, count in prepared.values()]
    check_test_losses(counts, cfg.max_test_dropped)
    return {name: ds for name, (ds, _) in prepared.items()}, counts


def test_loss_lines(counts: list[SourceCount]) -> list[str]:
    """One line per test set that lost rows: how many, why, and that its scores cover only the rest."""
    return [f"Test set {c.source!r} lost {c.rows - c.kept} of {c.rows} rows ({100 * (c.rows - c.kept) / c.rows:.0f} "
            f"%: {', '.join(f'{why}: {n}' for why, n in c.dropped.items())}); its scores cover the {c.kept} kept"
            for c in counts if c.split == "test" and c.rows and c.kept < c.rows]


def check_test_losses(counts: list[SourceCount], max_share: float) -> None:
    """Warn about every test set that lost rows; stop when one lost more than `max_share` of them."""
    for line in test_loss_lines(counts):
        log.warning(line)
    over = [c for c in counts if c.split == "test" and c.rows and (c.rows - c.kept) / c.rows > max_share]
    if over:
        raise RecipeError("data", [f"test set {c.source!r} lost {c.rows - c.kept} of {c.rows} rows, more than "
                                   f"data.max_test_dropped={max_share:g} allows: {lost_rows(c)}. Fix those files, or "
                                   f"allow it with data.max_test_dropped=1" for c in over])


def lost_rows(count: SourceCount, most: int = 5) -> str:
    """'a.wav (missing audio file), ...': the first dropped rows of a source, by audio path and reason."""
    shown = [f"{Path(str(r['audio'])).name} ({r['reason']})" for r in count.dropped_rows[:most]]
    more = len(count.dropped_rows) - most
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


class WaveformAugment:
    """Speed perturbation and additive white noise, drawn anew each time a training row is read.

    Uses torch's global generator, which the Trainer seeds (train.seed), so runs repeat.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "waveform": self.perturb(np.asarray(row["waveform"], dtype=np.float32))}

    def batch(self, rows: dict[str, list]) -> dict[str, list]:
        return {**rows, "waveform": [self.perturb(np.asarray(w, dtype=np.float32)) for w in rows["waveform"]]}

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * torch.rand(()).item()

    def perturb(self, waveform: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        if len(waveform) > 1 and torch.rand(()).item() < cfg.speed_prob:
            factor = self._uniform(*cfg.speed_range)  # > 1: faster and shorter (pitch moves with it, as in Kaldi)
            length = max(1, int(len(waveform) / factor))
            waveform = np.interp(np.linspace(0, len(waveform) - 1, length), np.arange(len(waveform)),
                                 waveform).astype(np.float32)
        if torch.rand(()).item() < cfg.noise_prob:
            snr_db = self._uniform(*cfg.noise_snr_db)
            noise_rms = np.sqrt(np.mean(np.square(waveform, dtype=np.float64))) / 10 ** (snr_db / 20)
            waveform = waveform + noise_rms * torch.randn(len(waveform)).numpy().astype(np.float32)
        return waveform[: int(MAX_AUDIO_SECONDS * SAMPLE_RATE)]  # slowed-down clips stay within 30 s


def first_rows(dataset: Dataset, n: int) -> list[dict[str, Any]]:
    """The first n rows (reads only those), e.g. for the merge parity check."""
    subset = dataset.select(range(min(n, len(dataset))))
    return [subset[i] for i in range(len(subset))]


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
        if c.streamed:
            lines.append(f"| {c.split} | {c.source} | streamed | - | - | not counted (streamed) |")
            continue
        dropped = ", ".join(f"{r}: {n}" for r, n in c.dropped.items()) or "none"
        lines.append(f"| {c.split} | {c.source} | {c.rows} | {c.kept} | {c.hours:.3f} | {dropped} |")
    return "\n".join(lines)
