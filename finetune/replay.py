"""Pseudo-labels for replay: the base model transcribes unlabeled replay clips once, in each clip's language.

Training on them keeps what the base model already did in that language or domain (self-distillation), so a
fine-tune on a narrow corpus forgets less. The labels are stored by `datasets` under a key made of the prepared
clips, the base model (id, revision, config, and for a local directory its weight files' sizes and times) and the
decoding settings: a re-run, or another rank, reads them back instead of transcribing again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from finetune.data_counts import SourceCount
from finetune.rows import label_ids
from finetune.model import generate_rows, precision_context
from finetune.outputs import log
from finetune.recipe import Recipe

PSEUDO_VERSION = "1"  # bump when the labelling below changes, so cached labels are not reused
EMPTY = "empty pseudo-label"  # drop reason: the base model heard no words


def model_key(recipe: Recipe, config: dict[str, Any]) -> str:
    """What identifies the base model's transcripts: id, revision, config, weight files (local), decoding."""
    key: list[Any] = [recipe.model.name, recipe.model.revision, recipe.model.dtype, config,
                      recipe.eval.model_dump(include={"num_beams", "temperature", "max_new_tokens"}),
                      recipe.eval_precision, PSEUDO_VERSION]
    folder = Path(recipe.model.name).expanduser()
    if folder.is_dir():
        key += sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.safetensors"))
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PseudoLabeler:
    """Transcribes prepared replay rows with the base model (LoRA switched off); `datasets` caches the result."""

    def __init__(self, recipe: Recipe, peft_model: torch.nn.Module, processor: Any) -> None:
        self.recipe, self.model, self.processor = recipe, peft_model, processor
        self.key = model_key(recipe, peft_model.get_base_model().config.to_dict())

    def _label(self, batch: dict[str, list]) -> dict[str, list]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        device = next(self.model.parameters()).device
        with self.model.disable_adapter(), precision_context(device.type, self.recipe.eval_precision):
            texts, _ = generate_rows(self.model.eval(), self.processor, rows)
        tokenizer = self.processor.tokenizer
        return {"text": texts, "labels": [label_ids(tokenizer, t, row["language"]) if t else []
                                          for t, row in zip(texts, rows)]}

    def __call__(self, dataset: Dataset, count: SourceCount) -> Dataset:
        """Rows with the base model's transcript as text and labels; rows it heard nothing in are dropped, counted
        in `count`."""
        if len(dataset) == 0:
            return dataset
        fingerprint = hashlib.sha256(f"{dataset._fingerprint}|{self.key}".encode()).hexdigest()[:16]
        labelled = dataset.map(self._label, batched=True, batch_size=self.recipe.eval.batch_size,
                               features=dataset.features, new_fingerprint=fingerprint,
                               desc=f"Pseudo-labels for {count.source} (base model, cached)")
        empty = [i for i, labels in enumerate(labelled["labels"]) if not labels]
        if empty:
            count.dropped[EMPTY] = len(empty)
            count.dropped_rows += [{"split": count.split, "source": count.source, "row": i, "audio": None, "text": "",
                                    "reason": EMPTY} for i in empty]
            count.kept -= len(empty)
            labelled = labelled.filter(lambda labels: len(labels) > 0, input_columns="labels")
            count.hours = float(sum(labelled["duration"])) / 3600
        log.info("Replay %s: %d clips pseudo-labelled by the base model (%d empty, dropped)", count.source,
                 len(labelled), len(empty))
        return labelled
