"""Frozen-encoder fast path: each clip's encoder output computed once, cached on disk by datasets, reused for every
epoch and for evaluation.

When only decoder adapters train (lora.encoder: false) and nothing changes the encoder input between steps (no
SpecAugment, no waveform augmentation), the encoder output of a clip is the same at every step: a training step then
runs the decoder alone. The cache is keyed by the dataset (its fingerprint covers the audio, labels and features),
the encoder weights, the attention implementation, the precision and the device type, so any change recomputes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any, Callable, ContextManager

import torch
from datasets import Array2D, Dataset, Features

from finetune.collator import ENCODER_COLUMN, SpeechCollator
from finetune.data import PreparedData
from finetune.model import find_encoder, precision_context
from finetune.outputs import log
from finetune.recipe import Recipe

AUDIO_COLUMNS = ("input_features", "waveform")  # what the encoder output replaces


def encoder_fingerprint(encoder: torch.nn.Module, dataset: Dataset, attn: str, precision: str,
                        device: torch.device) -> str:
    """Same dataset + same encoder weights + same numerics -> same cache files (other ranks and re-runs reuse)."""
    digest = hashlib.sha256(f"{dataset._fingerprint}|{attn}|{precision}|{device.type}".encode())
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def add_encoder_outputs(dataset: Dataset, model: torch.nn.Module, collate: SpeechCollator, device: torch.device,
                        precision: str, batch_size: int = 8) -> Dataset:
    """`dataset` with its features/waveform replaced by the encoder's last hidden state (float32, 1500 x d_model),
    computed under the autocast training uses, so cached outputs equal what the uncached path computes."""
    encoder = find_encoder(model)
    config = model.config
    shape = (config.max_source_positions, config.d_model)
    features = Features({name: feature for name, feature in dataset.features.items() if name not in AUDIO_COLUMNS})
    features[ENCODER_COLUMN] = Array2D(shape, "float32")
    was_training = encoder.training
    encoder.eval()

    @torch.inference_mode()
    def encode(batch: dict[str, list]) -> dict[str, Any]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        inputs = collate.features(rows).to(device, next(encoder.parameters()).dtype)
        with precision_context(device.type, precision):
            hidden = encoder(inputs).last_hidden_state
        return {ENCODER_COLUMN: list(hidden.float().cpu().numpy())}

    try:
        return dataset.map(
            encode, batched=True, batch_size=batch_size, writer_batch_size=batch_size, features=features,
            remove_columns=[c for c in AUDIO_COLUMNS if c in dataset.column_names],
            new_fingerprint=encoder_fingerprint(encoder, dataset, config._attn_implementation, precision, device),
            desc="Encoder outputs (computed once, cached)",
        )
    finally:
        encoder.train(was_training)


def cache_encoder_outputs(recipe: Recipe, model: torch.nn.Module, processor: Any, data: PreparedData,
                          device: torch.device,
                          main_process_first: Callable[[], ContextManager] = contextlib.nullcontext) -> PreparedData:
    """Train and eval rows with cached encoder outputs when the recipe allows it; the log says which path runs."""
    if not recipe.uses_encoder_cache():
        why = ("train.cache_encoder=false" if recipe.train.cache_encoder is False
               else "; ".join(recipe.encoder_cache_blockers()))
        log.info("Full path: the encoder runs at every step (%s)", why)
        return data
    collate = SpeechCollator(processor, model.config.decoder_start_token_id)
    model.to(device)
    start = time.perf_counter()
    with main_process_first():
        train, evaluation = (add_encoder_outputs(ds, model, collate, device, recipe.train_precision,
                                                 recipe.eval.batch_size) for ds in (data.train, data.eval))
    mb_per_clip = model.config.max_source_positions * model.config.d_model * 4 / 2**20
    log.info("Frozen-encoder fast path: decoder-only adapters and no audio augmentation, so encoder outputs are "
             "computed once (%d train + %d eval clips, %.0f s, %.1f MB per clip on disk) and only the decoder runs "
             "while training", len(train), len(evaluation), time.perf_counter() - start, mb_per_clip)
    return PreparedData(train=train, eval=evaluation, test=data.test, counts=data.counts)
