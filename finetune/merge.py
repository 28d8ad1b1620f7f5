"""The best adapter merged into a full Whisper checkpoint that plain transformers loads, checked for parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from finetune.model import DTYPES, generate_rows, set_spec_augment
from finetune.outputs import atomic_dir, log
from finetune.pipeline import build_model
from finetune.recipe import AugmentConfig, Recipe

MERGED_DIR = "merged"  # <output_dir>/merged


def merge_adapter(recipe: Recipe, adapter_dir: str | Path, processor: WhisperProcessor,
                  parity_rows: list[dict[str, Any]]) -> tuple[dict[str, Any], WhisperForConditionalGeneration]:
    """Write <output_dir>/merged (weights, processor, generation config) atomically; compare transcripts.

    Parity: the merged checkpoint, reloaded from disk, must give the same greedy transcripts as the base model with
    the saved adapter on top, on `parity_rows` (prepared eval rows). Returns what was checked, and the merged
    model as reloaded from disk (what users will load).
    """
    final = Path(recipe.output_dir) / MERGED_DIR
    tuned = build_model(recipe, adapter_dir).eval()
    with_adapter = transcripts(tuned, processor, parity_rows)
    merged = tuned.merge_and_unload()
    merged.config.use_cache = True  # training turned the KV cache off; inference wants it back
    set_spec_augment(merged, AugmentConfig())  # a training setting: the shipped checkpoint has it off, as Whisper
    with atomic_dir(final) as tmp:
        merged.save_pretrained(tmp)  # weights + config + generation_config (language, task)
        processor.save_pretrained(tmp)
    reloaded = WhisperForConditionalGeneration.from_pretrained(final, dtype=DTYPES[recipe.model.dtype]).eval()
    from_merged = transcripts(reloaded, processor, parity_rows)
    same = sum(a == b for a, b in zip(with_adapter, from_merged))
    parity = {"clips": len(parity_rows), "identical": same, "ok": same == len(parity_rows),
              "mismatches": [{"adapter": a, "merged": b} for a, b in zip(with_adapter, from_merged) if a != b]}
    log.info("Merged model written to %s; parity with base+adapter: %d/%d identical transcripts%s",
             final, same, len(parity_rows), "" if parity["ok"] else " (MISMATCH, see results.json)")
    return {"path": str(final), "parity": parity}, reloaded


def transcripts(model: torch.nn.Module, processor: WhisperProcessor, rows: list[dict[str, Any]],
                batch_size: int = 8) -> list[str]:
    return [text for start in range(0, len(rows), batch_size)
            for text in generate_rows(model, processor, rows[start:start + batch_size])[0]]
