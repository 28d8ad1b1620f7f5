"""Processor, Whisper model with language/task on its generation config, and LoRA adapters."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from finetune.hub_probe import hub_problem, is_local
from finetune.recipe import AugmentConfig, EvalConfig, LoraConfig, ModelConfig, RecipeError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # train/eval precision


def _local_error(cfg: ModelConfig, err: Exception) -> RecipeError:
    path = Path(cfg.name).expanduser().resolve()
    if path.is_file():
        return RecipeError("model", [f"model.name: {str(path)!r} is a file; give the model's directory (config.json, "
                                     f"weights, tokenizer and preprocessor files) or a Hub id"])
    if not path.is_dir():
        return RecipeError("model", [f"model.name: directory {str(path)!r} does not exist"])
    return RecipeError("model", [f"model.name: {str(path)!r} is not a Whisper checkpoint in transformers format "
                                 f"(config.json, model weights, tokenizer and preprocessor files): {err}"])


def _hub_error(cfg: ModelConfig, why: str) -> RecipeError:
    return RecipeError("model", [
        f"model.name: could not load {cfg.name!r} from the Hugging Face Hub ({why}), and it is not in the local "
        f"cache. Point it at a local copy instead: model.name=/path/to/whisper-dir on the command line, or "
        f"`name:` under `model:` in the recipe."
    ])


def _from_pretrained(load, cfg: ModelConfig, **kwargs):
    """Load a local directory, or a Hub model after one quick check (the cache is used when the Hub is away)."""
    if is_local(cfg.name):
        try:
            return load(cfg.name, **kwargs)
        except (OSError, ValueError) as err:
            raise _local_error(cfg, err) from None
    problem = hub_problem(cfg.name, "model", cfg.revision)
    try:
        return load(cfg.name, revision=cfg.revision, local_files_only=problem is not None, **kwargs)
    except (OSError, ValueError) as err:
        raise _hub_error(cfg, problem or f"{type(err).__name__}: {err}") from None


def load_processor(cfg: ModelConfig) -> WhisperProcessor:
    """Feature extractor + tokenizer, with the recipe's language/task as the tokenizer's prefix."""
    processor = _from_pretrained(WhisperProcessor.from_pretrained, cfg)
    processor.tokenizer.set_prefix_tokens(language=cfg.language, task=cfg.task, predict_timestamps=False)
    return processor


def load_model(cfg: ModelConfig, adapter: str | Path | None = None) -> WhisperForConditionalGeneration | PeftModel:
    """Base Whisper in the recipe's dtype, generating in the recipe's language and task; with `adapter`, a saved
    LoRA adapter on top (a PeftModel). The one way every entry point loads a model."""
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise RecipeError("model", [f"adapter {str(adapter)!r}: no adapter_config.json there (a peft adapter folder, "
                                    "e.g. runs/NAME/adapter)"])
    try:
        model = _from_pretrained(WhisperForConditionalGeneration.from_pretrained, cfg, dtype=DTYPES[cfg.dtype],
                                 attn_implementation=cfg.attn_implementation)
    except ImportError as err:  # e.g. flash_attention_2 without the flash-attn package
        raise RecipeError("model", [f"model.attn_implementation={cfg.attn_implementation!r}: {err}. "
                                    "Use sdpa (the default) or eager."]) from None
    set_language(model, cfg.language, cfg.task)
    # Whisper's forward ignores `num_items_in_batch`; telling the Trainer so keeps the loss and gradients
    # unchanged by gradient accumulation and world size (otherwise both scale them up by the accumulation steps
    # or the number of processes).
    model.accepts_loss_kwargs = False
    model.config.use_cache = False  # the cache is for generation; training with it only costs memory
    return model if adapter is None else PeftModel.from_pretrained(model, str(adapter))


def precision_context(device_type: str, precision: str) -> ContextManager:
    """torch autocast for "bf16"/"fp16" (what the Trainer's mixed precision does on CPU and GPU); none for fp32.
    Weights stay in their dtype; matmuls run in the low precision (on CPUs with AVX-512 BF16/AMX, ~2x fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=PRECISION_DTYPES[precision])


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module):
    """Attention weights for the duration (word timestamps and alignment pictures read the cross-attention):
    the fused sdpa/flash kernels never materialise them, so the plain implementation runs meanwhile."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    before = base.config._attn_implementation
    if before != "eager":
        base.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if before != "eager":
            base.set_attn_implementation(before)


def set_language(model: WhisperForConditionalGeneration, language: str, task: str) -> None:
    """Language and task live on the generation config: generate() and pipeline() then need no arguments."""
    model.generation_config.language = language
    model.generation_config.task = task
    model.generation_config.forced_decoder_ids = None
    model.config.forced_decoder_ids = None


def set_decoding(model: WhisperForConditionalGeneration, cfg: EvalConfig) -> None:
    """Decoding settings for evaluation; saved with the merged model, so pipeline() decodes the same way."""
    model.generation_config.max_new_tokens = cfg.max_new_tokens
    model.generation_config.num_beams = cfg.num_beams
    model.generation_config.do_sample = cfg.temperature > 0
    model.generation_config.temperature = cfg.temperature if cfg.temperature > 0 else 1.0


def add_lora(model: WhisperForConditionalGeneration, cfg: LoraConfig, seed: int) -> PeftModel:
    """Wrap the model with fresh LoRA adapters, initialized from `seed` (reproducible); only the adapters train."""
    # No task_type: peft's SEQ_2_SEQ_LM wrapper passes input_ids, which Whisper's forward rejects ("got multiple
    # values for keyword argument 'input_ids'").
    config = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=lora_targets(cfg),
        use_dora=cfg.use_dora,
        use_rslora=cfg.use_rslora,
        bias="none",
    )
    torch.manual_seed(seed)  # LoRA's A matrices start random: same seed, same run
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # target modules that match nothing
        raise RecipeError("lora", [f"lora.target_modules={cfg.target_modules}: {err}"]) from None


def lora_targets(cfg: LoraConfig) -> list[str] | str:
    """Module names for peft: the list as given, or (decoder only) a regex peft matches against full names."""
    if cfg.encoder:
        return cfg.target_modules
    names = "|".join(re.escape(name) for name in cfg.target_modules)
    return rf".*decoder\..*\.({names})"


def find_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """WhisperEncoder of a plain or peft-wrapped Whisper."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.get_encoder()


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def set_spec_augment(model: WhisperForConditionalGeneration, cfg: AugmentConfig) -> None:
    """Whisper's own SpecAugment: its forward masks time steps and mel bins while training, never in eval."""
    model.config.apply_spec_augment = cfg.spec_augment
    model.config.mask_time_prob = cfg.mask_time_prob
    model.config.mask_time_length = cfg.mask_time_length
    model.config.mask_feature_prob = cfg.mask_feature_prob
    model.config.mask_feature_length = cfg.mask_feature_length


@dataclass
class Transcripts:
    texts: list[str]
    hit_max_length: list[bool]  # generation stopped at max_new_tokens, not at <|endoftext|> (a runaway signal)
    seconds: float  # wall time of generation


def _to(inputs: dict[str, Any], parameter: torch.Tensor) -> dict[str, Any]:
    """Audio inputs on the model's device and in its dtype (features or cached encoder outputs)."""
    if "encoder_outputs" in inputs:
        hidden = inputs["encoder_outputs"].last_hidden_state.to(parameter.device, parameter.dtype)
        return {"encoder_outputs": type(inputs["encoder_outputs"])(last_hidden_state=hidden)}
    return {"input_features": inputs["input_features"].to(parameter.device, parameter.dtype)}


@torch.inference_mode()
def generate_rows(model: torch.nn.Module, processor: WhisperProcessor,
                  rows: list[dict[str, Any]]) -> tuple[list[str], list[bool]]:
    """Texts of prepared rows (features, waveform or cached encoder outputs), each clip generated in its own
    language, and whether each one used the whole max_new_tokens budget without ending (a runaway signal)."""
    from finetune.collator import SpeechCollator

    parameter = next(model.parameters())
    collate = SpeechCollator(processor, model.config.decoder_start_token_id)
    languages = [row["language"] for row in rows]
    ids = model.generate(**_to(collate.audio_inputs(rows), parameter),
                         language=languages[0] if len(set(languages)) == 1 else languages)
    eot, budget = processor.tokenizer.eos_token_id, model.generation_config.max_new_tokens
    decoded = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    # generate() returns the new tokens only, padded with <|endoftext|>: a clip that used the whole budget without
    # ending has `budget` tokens that are not <|endoftext|>.
    return [t.strip() for t in decoded], [bool(budget) and int((seq != eot).sum()) >= budget for seq in ids]


def transcribe_dataset(model: torch.nn.Module, processor: WhisperProcessor, dataset, batch_size: int) -> Transcripts:
    """Every row of a prepared dataset, batched longest first (similar lengths share a batch, peak memory comes
    first), each clip in its own language; results in the dataset's order."""
    order = sorted(range(len(dataset)), key=lambda i: -dataset[i]["duration"]) if len(dataset) else []
    texts: list[str] = [""] * len(dataset)
    hit_max = [False] * len(dataset)
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        indices = order[first:first + batch_size]
        batch_texts, batch_max = generate_rows(model, processor, [dataset[i] for i in indices])
        for i, text, stopped in zip(indices, batch_texts, batch_max):
            texts[i], hit_max[i] = text, stopped
    return Transcripts(texts, hit_max, time.perf_counter() - start)
