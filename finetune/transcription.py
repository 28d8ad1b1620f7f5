"""Long-form transcription of audio and video files with segment timestamps (what `finetune transcribe` runs).

Whisper's own sequential algorithm, as transformers' generate() implements it: 30 s windows, each window's last
complete timestamp decides where the next starts, temperature fallback when a window's output looks like a loop
(compression ratio) or is unlikely (average log-probability), windows judged silent skipped (no-speech probability).
Several files decode together: each generate() step runs one 30 s window of every file in the batch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from finetune.model import eager_attention, load_model, load_processor
from finetune.recipe import SAMPLE_RATE, ModelConfig

FRAMES_PER_SECOND = 100  # Whisper's log-mel hop is 10 ms
WINDOW_FRAMES = 3000  # one 30 s window


@dataclass
class DecodeOptions:
    language: str | None  # None: detect per file from its first 30 s
    task: str = "transcribe"
    beam_size: int = 1
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # fallback ladder; one value: no fallback
    # transformers measures the ratio on token bytes, not text: 1.35 there is what 2.4 is in openai-whisper.
    compression_ratio_threshold: float | None = 1.35
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = False
    initial_prompt: str | None = None  # text the first window is prompted with (spellings, names, style)
    word_timestamps: bool = False  # per-word times from the cross-attention alignment heads
    max_new_tokens: int | None = 224  # per 30 s window: openai-whisper's limit (half the text context)

    @classmethod
    def greedy(cls, language: str | None) -> DecodeOptions:
        """Temperature 0, no fallback, no thresholds: the decoding runtimes are compared with."""
        return cls(language=language, temperatures=(0.0,), compression_ratio_threshold=None,
                   logprob_threshold=None, no_speech_threshold=None)


def pick_device(device: str = "auto") -> tuple[torch.device, str]:
    """CUDA when present (bf16 where supported, else fp16), else CPU in fp32; the dtype as model.dtype names it."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return torch.device(device), "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return torch.device(device), "float32"


def load_for_inference(model_name: str, adapter: str | None = None, device: str = "auto",
                       revision: str | None = None) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """A checkpoint (local or Hub), with a peft adapter merged in when given, on the best device."""
    where, dtype = pick_device(device)
    cfg = ModelConfig(name=model_name, revision=revision, dtype=dtype)
    processor = load_processor(cfg)
    model = load_model(cfg, adapter)
    if adapter is not None:
        model = model.merge_and_unload()  # merged: no LoRA cost per token
    model.config.use_cache = True
    return model.to(where).eval(), processor


def log_mel(processor: WhisperProcessor, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Untruncated log-mel features padded to the longest file (at least one 30 s window) + frame mask."""
    longest = max(len(w) for w in waveforms)
    padding = "longest" if longest > WINDOW_FRAMES * SAMPLE_RATE // FRAMES_PER_SECOND else "max_length"
    batch = processor.feature_extractor(waveforms, sampling_rate=SAMPLE_RATE, truncation=False, padding=padding,
                                        return_attention_mask=True, return_tensors="pt")
    return batch.input_features, batch.attention_mask


@torch.inference_mode()
def detect_languages(model: WhisperForConditionalGeneration, processor: WhisperProcessor,
                     features: torch.Tensor) -> list[str]:
    """Language code per file from its first 30 s, detected first and then decoded with: generate() left to
    detect the language itself gave truncated or looping output on clips that decode right with the language set."""
    parameter = next(model.parameters())
    ids = model.detect_language(input_features=features[:, :, :WINDOW_FRAMES].to(parameter.device, parameter.dtype))
    tokens = processor.tokenizer.convert_ids_to_tokens(ids.view(-1).tolist())
    return [token.strip("<|>") for token in tokens]


def _segment(processor: WhisperProcessor, raw: dict[str, Any], index: int, duration: float) -> dict[str, Any]:
    """One transformers segment -> openai-whisper's segment fields (times in s, clamped to the file)."""
    tokens = [int(t) for t in raw["tokens"].tolist() if int(t) < processor.tokenizer.eos_token_id]
    start = min(max(float(raw["start"]), 0.0), duration)
    end = min(max(float(raw["end"]), start), duration)
    segment = {"id": index, "seek": int(round(start * FRAMES_PER_SECOND)), "start": round(start, 3),
               "end": round(end, 3), "text": processor.tokenizer.decode(tokens, skip_special_tokens=True),
               "tokens": tokens}
    if "token_timestamps" in raw:
        segment["words"] = words(processor, raw["tokens"].tolist(), raw["token_timestamps"].tolist(), start, end)
    return segment


def words(processor: WhisperProcessor, tokens: list[int], times: list[float], start: float,
          end: float) -> list[dict[str, Any]]:
    """openai-whisper's word list [{"word", "start", "end"}] from a segment's tokens and their alignment times:
    a token starts at its own time and lasts until the next token's; a word is the tokens from one that begins
    with a space (or the first) to the next such, decoded together (a character may span tokens); times clamped
    to the segment."""
    eos = processor.tokenizer.eos_token_id
    groups: list[dict[str, Any]] = []
    for token, begin, finish in zip(tokens, times, [*times[1:], end]):
        if token >= eos:  # timestamps and specials carry no word
            continue
        if not groups or processor.tokenizer.decode([token])[:1].isspace():
            groups.append({"tokens": [], "start": begin})
        groups[-1]["tokens"].append(token)
        groups[-1]["end"] = finish
    found = []
    for group in groups:
        first = round(min(max(float(group["start"]), start), end), 3)
        found.append({"word": processor.tokenizer.decode(group["tokens"]), "start": first,
                      "end": round(min(max(float(group["end"]), first), end), 3)})
    return [w for w in found if w["word"].strip()]


def to_result(processor: WhisperProcessor, segments: list[dict[str, Any]], language: str,
              duration: float) -> dict[str, Any]:
    """openai-whisper's result layout: {"text", "segments", "language"}; empty segments dropped as it does."""
    kept: list[dict[str, Any]] = []
    for raw in segments:
        segment = _segment(processor, raw, len(kept), duration)
        if segment["text"].strip():
            if kept and segment["start"] < kept[-1]["end"]:  # keep the timeline monotonic
                segment["start"] = kept[-1]["end"]
                segment["end"] = max(segment["end"], segment["start"])
            kept.append(segment)
    # Segment texts as decoded (openai-whisper's), joined with one space where a segment does not start with one.
    text = "".join(s["text"] if s["text"][:1].isspace() else " " + s["text"] for s in kept)
    return {"text": text, "segments": kept, "language": language}


@torch.inference_mode()
def transcribe_batch(model: WhisperForConditionalGeneration, processor: WhisperProcessor,
                     waveforms: list[np.ndarray], options: DecodeOptions,
                     on_progress: Callable[[float], None] | None = None) -> list[dict[str, Any]]:
    """Whole files (any length) -> one openai-whisper style result per file. `on_progress` gets the audio
    seconds decoded so far in this batch."""
    parameter = next(model.parameters())
    features, mask = log_mel(processor, waveforms)
    languages = [options.language] * len(waveforms) if options.language else detect_languages(model, processor,
                                                                                                features)
    monitor = None
    if on_progress is not None:
        def monitor(seek_and_total: torch.Tensor) -> None:
            frames = torch.minimum(seek_and_total[:, 0], seek_and_total[:, 1]).sum()
            on_progress(float(frames) / FRAMES_PER_SECOND)
    generate_kwargs = dict(
        input_features=features.to(parameter.device, parameter.dtype),
        attention_mask=mask.to(parameter.device),
        language=languages[0] if len(set(languages)) == 1 else languages,
        task=options.task,
        return_timestamps=True,
        return_segments=True,
        num_beams=options.beam_size,
        temperature=options.temperatures if len(options.temperatures) > 1 else options.temperatures[0],
        compression_ratio_threshold=options.compression_ratio_threshold,
        logprob_threshold=options.logprob_threshold,
        no_speech_threshold=options.no_speech_threshold,
        condition_on_prev_tokens=options.condition_on_previous_text,
        max_new_tokens=options.max_new_tokens,
        monitor_progress=monitor,
        **prompt_and_words(processor, options, parameter.device),
    )
    with eager_attention(model) if options.word_timestamps else contextlib.nullcontext():
        out = model.generate(**generate_kwargs)
    durations = [len(w) / SAMPLE_RATE for w in waveforms]
    return [to_result(processor, segments, language, duration)
            for segments, language, duration in zip(out["segments"], languages, durations)]


def prompt_and_words(processor: WhisperProcessor, options: DecodeOptions, device: torch.device) -> dict[str, Any]:
    """generate() arguments for --initial_prompt (the first window reads it after <|startofprev|>, as the whisper
    CLI does; later windows read the previous text instead when conditioning is on) and --word_timestamps."""
    extra: dict[str, Any] = {}
    if options.initial_prompt:
        extra["prompt_ids"] = processor.get_prompt_ids(options.initial_prompt, return_tensors="pt").to(device)
        extra["prompt_condition_type"] = "first-segment"
    if options.word_timestamps:
        extra["return_token_timestamps"] = True
    return extra


def batches_by_length(durations: list[float], batch_size: int) -> list[list[int]]:
    """Indices grouped longest first: files of similar length share a batch (less padding)."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def temperature_ladder(start: float, increment: float | None) -> tuple[float, ...]:
    """openai-whisper's fallback temperatures: start, start+increment, ... up to 1.0."""
    if not increment:
        return (start,)
    steps = int(math.floor((1.0 - start) / increment + 1e-6)) + 1
    return tuple(round(start + i * increment, 4) for i in range(max(steps, 1)))
