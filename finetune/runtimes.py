"""The same audio through transformers' pipeline, `finetune transcribe`'s decoding and faster-whisper on CTranslate2
exports (`finetune benchmark --runtimes`)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from finetune.audio import load_audio
from finetune.outputs import package_versions
from finetune.recipe import SAMPLE_RATE


def benchmark_runtimes(args: argparse.Namespace, workdir: str) -> dict:
    """The same audio through transformers' pipeline, `finetune transcribe`'s decoding and faster-whisper on
    CTranslate2 exports (int8, float32) made on the spot: seconds and x real time each (greedy, no fallback)."""
    from faster_whisper import WhisperModel
    from transformers import pipeline

    from finetune.export import convert, model_language
    from finetune.transcription import DecodeOptions, load_for_inference, transcribe_batch

    model_dir = Path(args.runtimes)
    language = model_language(model_dir) or "en"
    waveforms = [load_audio(path) for path in args.audio]
    audio_s = sum(len(w) for w in waveforms) / SAMPLE_RATE
    model, processor = load_for_inference(str(model_dir))
    results = {}

    def timed(name: str, transcribe_all) -> None:
        start = time.perf_counter()
        transcribe_all()
        seconds = time.perf_counter() - start
        results[name] = {"seconds": seconds, "x_real_time": audio_s / seconds}
        print(f"benchmark: {name}: {seconds:.1f} s for {audio_s:.1f} s of audio", file=sys.stderr, flush=True)

    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                   feature_extractor=processor.feature_extractor, chunk_length_s=30, batch_size=8)
    timed("transformers pipeline (chunk_length_s=30, batch_size=8)", lambda: [
        asr({"raw": w, "sampling_rate": SAMPLE_RATE}, return_timestamps=True,
            generate_kwargs={"language": language, "task": "transcribe"}) for w in waveforms])
    options = DecodeOptions.greedy(language)
    timed("finetune transcribe (long-form generate, batch 8)", lambda: [
        transcribe_batch(model, processor, waveforms[i:i + 8], options) for i in range(0, len(waveforms), 8)])
    for quantization in ("int8", "float32"):
        convert(model_dir, Path(workdir) / quantization, quantization)
        runtime = WhisperModel(str(Path(workdir) / quantization), device="cpu", compute_type=quantization,
                               cpu_threads=torch.get_num_threads())
        timed(f"faster-whisper {quantization}", lambda: [
            list(runtime.transcribe(w, language=language, beam_size=1, temperature=0.0,
                                    condition_on_previous_text=False)[0]) for w in waveforms])
    return {"model": str(model_dir), "audio": args.audio, "audio_seconds": audio_s, "language": language,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
            "runtimes": results, "versions": package_versions()}
