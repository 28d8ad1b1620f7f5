"""Cross-attention alignment pictures for the report: for a few utterances, where in the audio the model's
alignment heads (the decoder heads whose cross-attention follows the speech; word timestamps read the same heads)
look while each output token is read. A diagonal band means text and audio stay aligned; a smeared or broken band
shows where timestamps will go wrong."""

from __future__ import annotations

import math
from typing import Any

import torch

from finetune.collator import SpeechCollator
from finetune.model import eager_attention
from finetune.rows import prefix_ids

PICTURED = 3  # utterances per report
ENCODER_FRAME_S = 0.02  # one encoder position = 20 ms of audio


@torch.inference_mode()
def alignment_map(model: torch.nn.Module, processor: Any, row: dict[str, Any], language: str) -> dict[str, Any] | None:
    """One utterance: the model's own transcript and its picture. None when the model names no alignment heads
    or transcribes nothing."""
    if not getattr(model.generation_config, "alignment_heads", None):
        return None
    parameter = next(model.parameters())
    tokenizer = processor.tokenizer
    features = SpeechCollator(processor, model.config.decoder_start_token_id).features([row])
    features = features.to(parameter.device, parameter.dtype)
    generated = model.generate(input_features=features, language=language)[0].tolist()
    text = [t for t in generated if t < tokenizer.eos_token_id]
    if not text:
        return None
    prefix = prefix_ids(tokenizer, language, getattr(model.generation_config, "task", None) or "transcribe")
    picture = cross_attention_picture(model, features, prefix, text, float(row["duration"]))
    return {"tokens": [tokenizer.decode([t]) for t in text], "frame_s": ENCODER_FRAME_S,
            "weights": [[round(float(v), 2) for v in line] for line in picture.cpu()]}


@torch.inference_mode()
def cross_attention_picture(model: torch.nn.Module, features: torch.Tensor, prefix: list[int], text: list[int],
                            duration_s: float) -> torch.Tensor:
    """(text tokens x encoder frames of the clip): the alignment heads' cross-attention at the positions that
    predict each text token, each head standardised over the tokens (as openai-whisper does before its word
    alignment), then averaged over the heads."""
    heads = model.generation_config.alignment_heads
    ids = torch.tensor([prefix + text], device=features.device)
    with eager_attention(model):
        out = model(input_features=features, decoder_input_ids=ids, output_attentions=True)
    weights = torch.stack([out.cross_attentions[layer][0, head] for layer, head in heads]).float()
    weights = weights[:, len(prefix) - 1:len(prefix) - 1 + len(text)]
    frames = max(1, min(weights.shape[-1], math.ceil(duration_s / ENCODER_FRAME_S)))
    weights = weights[..., :frames]
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True)
    return ((weights - mean) / (std + 1e-6)).mean(0)


def alignment_maps(model: torch.nn.Module, processor: Any, dataset: Any, language: str,
                   count: int = PICTURED) -> list[dict[str, Any]]:
    """Pictures for the first `count` utterances of a set (those the model transcribes to something)."""
    maps = []
    for index in range(min(count, len(dataset))):
        found = alignment_map(model.eval(), processor, dataset[index], language)
        if found:
            maps.append({"utterance": index, **found})
    return maps
