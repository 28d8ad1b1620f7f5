"""Export a merged checkpoint to CTranslate2 for faster-whisper, and check the export against transformers.

The conversion is ctranslate2's own TransformersConverter. faster-whisper also reads the tokenizer
(`tokenizer.json`) and the feature extractor settings (`preprocessor_config.json`: mel bins, 80 or 128) from the
model folder; transformers 5 nests the latter inside `processor_config.json`, so it is written out here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from finetune.audio import load_audio
from finetune.errors import UserError
from finetune.metrics import normalizer_for, score
from finetune.outputs import atomic_dir, log, write_json
from finetune.transcription import DecodeOptions, load_for_inference, transcribe_batch

QUANTIZATIONS = ["int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"]
REPORT = "export.json"


class ExportError(UserError):
    """A model folder that cannot be exported; the message says why and what to pass instead."""


def check_source(model_dir: Path) -> None:
    missing = [name for name in ("config.json", "tokenizer.json") if not (model_dir / name).is_file()]
    if not model_dir.is_dir() or missing:
        raise ExportError(f"{model_dir}: not a full Whisper checkpoint ({', '.join(missing) or 'no such folder'} "
                          "missing). Export a merged model (runs/NAME/merged), not an adapter folder.")


def convert(model_dir: Path, output: Path, quantization: str) -> None:
    """CTranslate2 model + tokenizer + preprocessor config in `output`, written atomically."""
    import ctranslate2.converters
    from transformers import WhisperProcessor

    processor = WhisperProcessor.from_pretrained(model_dir)
    with atomic_dir(output) as tmp:
        converter = ctranslate2.converters.TransformersConverter(str(model_dir), copy_files=["tokenizer.json"])
        converter.convert(str(tmp), quantization=quantization, force=True)
        processor.feature_extractor.to_json_file(str(tmp / "preprocessor_config.json"))


def faster_whisper_texts(output: Path, audio: list[Path], language: str | None, device: str,
                         compute_type: str) -> tuple[list[str], float]:
    """Greedy, no fallback, no previous-text prompt: the same decoding as the transformers side."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(output), device=device, compute_type=compute_type)
    start = time.perf_counter()
    texts = []
    for path in audio:
        segments, _ = model.transcribe(str(path), language=language, beam_size=1, temperature=0.0,
                                       condition_on_previous_text=False, vad_filter=False)
        texts.append("".join(s.text for s in segments).strip())
    return texts, time.perf_counter() - start


def transformers_texts(model_dir: Path, audio: list[Path], language: str | None,
                       device: str) -> tuple[list[str], float]:
    model, processor = load_for_inference(str(model_dir), device=device)
    options = DecodeOptions.greedy(language)
    start = time.perf_counter()
    texts = [transcribe_batch(model, processor, [load_audio(path)], options)[0]["text"].strip() for path in audio]
    return texts, time.perf_counter() - start


def model_language(model_dir: Path) -> str | None:
    """The language the checkpoint generates in (its generation config), e.g. "es"; None = detect."""
    path = model_dir / "generation_config.json"
    language = json.loads(path.read_text()).get("language") if path.is_file() else None
    return language.strip("<|>") if isinstance(language, str) else None


def check_export(model_dir: Path, output: Path, audio: list[Path], quantization: str,
                 device: str = "cpu") -> dict[str, Any]:
    """Transcribe `audio` with transformers and with faster-whisper on the export; WER between the two."""
    language = model_language(model_dir)
    compute_type = quantization if device != "cpu" or "16" not in quantization else "float32"  # no fp16 on CPU
    reference, transformers_s = transformers_texts(model_dir, audio, language, device)
    exported, faster_s = faster_whisper_texts(output, audio, language, device, compute_type)
    _, normalize = normalizer_for(language or "", None)
    agreement = score(reference, exported, normalize)
    return {
        "audio": [str(p) for p in audio], "language": language, "device": device, "compute_type": compute_type,
        "transformers": reference, "faster_whisper": exported,
        "wer_between": agreement["wer"], "cer_between": agreement["cer"],
        "transformers_s": round(transformers_s, 3), "faster_whisper_s": round(faster_s, 3),
        "speedup": round(transformers_s / max(faster_s, 1e-9), 2),
    }


def export(model_dir: str | Path, output: str | Path, quantization: str = "int8",
           check_audio: list[str | Path] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Convert, then (with audio) check; writes <output>/export.json and returns it."""
    model_dir, output = Path(model_dir), Path(output)
    check_source(model_dir)
    start = time.perf_counter()
    convert(model_dir, output, quantization)
    summary: dict[str, Any] = {"source": str(model_dir), "output": str(output), "format": "ctranslate2",
                               "quantization": quantization, "convert_s": round(time.perf_counter() - start, 2),
                               "size_mb": round(sum(f.stat().st_size for f in output.iterdir()) / 2**20, 1)}
    if check_audio:
        summary["check"] = check_export(model_dir, output, [Path(p) for p in check_audio], quantization, device)
    write_json(output / REPORT, summary)
    log.info("CTranslate2 model (%s, %.1f MB) written to %s", quantization, summary["size_mb"], output)
    return summary
