"""The recipe's datasets ready for training and scoring: train (+ replay, augmentation, windows), eval, test.

Rows are prepared source by source (finetune/rows.py, from finetune/sources.py); a bad clip never stops a run: it
is dropped with a reason, counted per source and listed row by row (finetune/data_counts.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np
from datasets import Dataset, IterableDataset, concatenate_datasets, interleave_datasets

from finetune.audio import WaveformAugment
from finetune.data_counts import SourceCount, check_test_losses, counts_table
from finetune.outputs import log
from finetune.packing import TrainingWindows, longest_stretch
from finetune.recipe import AugmentConfig, DataConfig, RecipeError, Source
from finetune.rows import numpy_features, prepare_source


@dataclass
class PreparedData:
    train: Dataset | IterableDataset | TrainingWindows
    eval: Dataset
    test: dict[str, Dataset]
    counts: list[SourceCount]


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
                                           "entry point has none (use finetune train)"])
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


def first_rows(dataset: Dataset, n: int) -> list[dict[str, Any]]:
    """The first n rows (reads only those), e.g. for the merge parity check."""
    subset = dataset.select(range(min(n, len(dataset))))
    return [subset[i] for i in range(len(subset))]
