"""Where rows come from: Hub datasets, local audiofolders and CSV/TSV/JSONL manifests, with the audio undecoded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Audio, Dataset, IterableDataset, Value, load_dataset

from finetune.hub_probe import hub_problem
from finetune.recipe import RecipeError, Source


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
