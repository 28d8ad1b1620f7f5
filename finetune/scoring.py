"""Scoring models on test sets: transcribe each set with each model and analyse the errors (no rendering here).

A model is given as a factory (a context manager yielding it), so the zero-shot base can be the fine-tuned model
with its adapter switched off, and a strength-scaled adapter is restored when scoring ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ContextManager

import torch
from datasets import Dataset

from finetune.alignment import alignment_maps
from finetune.longform import score_long_form
from finetune.metrics import analyse, normalizer_for
from finetune.model import transcribe_dataset
from finetune.outputs import log
from finetune.recipe import EvalConfig, Source

ModelFactory = Callable[[], ContextManager[torch.nn.Module]]


@contextlib.contextmanager
def adapter_disabled(peft_model) -> Iterator[torch.nn.Module]:
    """The base model inside a PeftModel, exactly: LoRA switched off for the duration."""
    with peft_model.disable_adapter():
        yield peft_model


def evaluate_model(model: torch.nn.Module, processor: Any, dataset: Dataset, cfg: EvalConfig,
                   normalize: Callable[[str], str]) -> dict[str, Any]:
    """Transcribe a set and analyse it; keys starting with _ hold the per-utterance detail."""
    transcripts = transcribe_dataset(model.eval(), processor, dataset, cfg.batch_size)
    durations = [float(d) for d in dataset["duration"]]
    result = analyse(list(dataset["text"]), transcripts.texts, durations, transcripts.hit_max_length, normalize)
    audio_seconds = sum(durations)
    result.update(seconds=transcripts.seconds, clips_per_second=len(dataset) / max(transcripts.seconds, 1e-9),
                  real_time_factor=transcripts.seconds / max(audio_seconds, 1e-9))
    return result


def set_normalizer(src: Source | None, language: str, tokenizer: Any) -> tuple[str, Callable[[str], str]]:
    """The normalizer of a set: its source's language if it names one, else the recipe's."""
    return normalizer_for((src.language if src else None) or language, tokenizer)


def score_sets(models: dict[str, ModelFactory], processor: Any, test: dict[str, Dataset], sources: list[Source],
               cfg: EvalConfig, language: str,
               known: dict[str, dict[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Every test set under every model ("zero_shot", "fine_tuned", ...), scored with its language's normalizer.

    `known[set][model]`: results already computed for that pair (e.g. while choosing the adapter strength), used
    as they are instead of transcribing the set again.
    """
    by_name = {src.label: src for src in sources}
    known = known or {}
    sets: dict[str, Any] = {}
    picture = True
    for name, dataset in test.items():
        src = by_name.get(name)
        normalizer, normalize = set_normalizer(src, language, processor.tokenizer)
        entry: dict[str, Any] = {"guard": bool(src and src.guard), "utterances": len(dataset),
                                 "audio_seconds": float(sum(dataset["duration"])), "normalizer": normalizer}
        for model_name, factory in models.items():
            if model_name in known.get(name, {}):
                entry[model_name] = known[name][model_name]
            else:
                with factory() as model:
                    entry[model_name] = evaluate_model(model, processor, dataset, cfg, normalize)
                    if src and src.long_form_s:
                        entry[model_name]["long_form"] = score_long_form(model, processor, dataset, src.long_form_s,
                                                                         src.language or language, normalize)
            log.info("%s, %s: WER %.2f, CER %.2f, %.2f clips/s", name, model_name, entry[model_name]["wer"],
                     entry[model_name]["cer"], entry[model_name]["clips_per_second"])
        if picture and not entry["guard"] and "fine_tuned" in models and "fine_tuned" not in known.get(name, {}):
            with models["fine_tuned"]() as model:  # the first in-domain set: a few alignment pictures
                entry["alignment"] = alignment_maps(model, processor, dataset, (src.language if src else None)
                                                    or language)
            picture = False
        sets[name] = entry
    return sets
