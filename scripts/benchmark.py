"""Measure a recipe's training and evaluation speed and memory on this machine; write JSON (+ Markdown).

Run as:
    python scripts/benchmark.py recipes/es-synth-base.yaml --steps 6 --eval-clips 16 --output benchmark.json
    python scripts/benchmark.py recipes/es-synth-base.yaml --compare --steps 4 --train-rows 40   # all variants
    python scripts/benchmark.py recipes/es-synth-base.yaml --compare --variants fp32-full,bf16-cached
    accelerate launch --multi_gpu --num_processes 2 scripts/benchmark.py recipes/demo.yaml --steps 4   # 2 ranks
    python scripts/benchmark.py recipes/es-synth-base.yaml --prepare-only      # data preparation: time, peak RSS
    python scripts/benchmark.py --runtimes runs/es-synth-base/merged --audio long.flac clip*.flac   # inference

Trains `--steps` optimizer steps (no evaluation, no checkpoints, outputs in a temporary directory), then generates
on the first `--eval-clips` eval clips. The first step is reported apart (warm-up); rates use the steps after it.
FLOPs per step are counted by torch's FlopCounterMode on one extra forward + backward of a training batch, and set
against a matmul peak measured on the spot. `--compare` runs the recipe under every variant (fp32/bf16 x full
encoder+decoder LoRA / decoder-only LoRA on cached encoder outputs x activation checkpointing off/on, and full LoRA on
packed 30-s windows), each in its own process (so each peak memory is its own), and writes benchmark.json +
benchmark.md. Speed is given per sample and per second of speech trained (padding excluded): a packed window
carries several clips. Numbers are for the machine
they ran on: the JSON records threads, world size, device and load with them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The project root instead of scripts/ first on sys.path: scripts/evaluate.py would shadow the `evaluate` package.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from finetune.data import SAMPLE_RATE, load_data  # noqa: E402
from finetune.encoder_cache import cache_encoder_outputs  # noqa: E402
from finetune.model import (PRECISION_DTYPES, add_lora, count_parameters, load_model, load_processor,  # noqa: E402
                            precision_context, set_decoding)
from finetune.packing import TrainingWindows  # noqa: E402
from finetune.outputs import is_main_process, package_versions, setup_logging, write_json, write_text  # noqa: E402
from finetune.recipe import RecipeError, load_recipe  # noqa: E402
from finetune.train import build_trainer, training_arguments  # noqa: E402


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (s)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def peak_memory() -> dict[str, float]:
    memory = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}  # ru_maxrss is KiB
    if torch.cuda.is_available():
        memory["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    return memory


# PyTorch's CPU attention kernel has no FLOP formula in FlopCounterMode: count it like the GPU kernels.
_aten = torch.ops.aten
CPU_ATTENTION_FLOPS = {
    _aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
    _aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v),
}


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, size: int = 2048, seconds: float = 1.0) -> float:
    """Achievable matmul rate here, now (GFLOP/s): square matmuls repeated for about `seconds`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        runs += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


def step_flops(trainer, model, precision: str) -> int:
    """FLOPs of one training forward + backward (one process's batch), as this configuration runs it."""
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model.train()
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with counter, precision_context(trainer.args.device.type, precision):
        trainer.compute_loss(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def benchmark_preparation(args: argparse.Namespace, workdir: str) -> dict:
    """Decode, filter and cache the recipe's data into an empty datasets cache; time and peak RSS of that alone."""
    import datasets

    datasets.config.HF_DATASETS_CACHE = Path(workdir) / "datasets-cache"  # measure the work, not a cache hit
    recipe = load_recipe(args.recipe, [*args.overrides, f"output_dir={workdir}"])
    processor = load_processor(recipe.model)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    start = time.perf_counter()
    data = load_data(recipe.data, processor, recipe.augment, recipe.train.seed)
    seconds = time.perf_counter() - start
    rows = sum(c.rows for c in data.counts)
    cache_gb = sum(f.stat().st_size for f in (Path(workdir) / "datasets-cache").rglob("*") if f.is_file()) / 1024**3
    hours = sum(c.hours for c in data.counts)
    return {
        "recipe": args.recipe, "overrides": args.overrides, "mode": "prepare-only", "rows": rows,
        "kept": sum(c.kept for c in data.counts), "seconds": seconds, "rows_per_s": rows / seconds,
        "audio_hours": hours, "cache_features": recipe.data.cache_features,
        "num_proc": recipe.data.num_proc, "peak_rss_gb_before": rss_before, "memory": peak_memory(),
        "cache_gb": cache_gb, "cache_mb_per_audio_hour": 1024 * cache_gb / hours if hours else None,
        "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(), "versions": package_versions(),
    }


def benchmark(args: argparse.Namespace, workdir: str) -> dict:
    steps = args.steps
    overrides = [*args.overrides, f"output_dir={workdir}", f"train.max_steps={steps}",
                 f"train.eval_steps={steps + 1000}", "train.resume=false"]  # no evaluation or checkpoint inside
    recipe = load_recipe(args.recipe, overrides)
    training_args = training_arguments(recipe)
    processor = load_processor(recipe.model)
    model = add_lora(load_model(recipe.model), recipe.lora, recipe.train.seed)
    set_decoding(model.get_base_model(), recipe.eval)
    data = load_data(recipe.data, processor, recipe.augment, recipe.train.seed, training_args.main_process_first)
    start = time.perf_counter()
    data = cache_encoder_outputs(recipe, model, processor, data, training_args.device,
                                 training_args.main_process_first)
    encoder_cache_s = time.perf_counter() - start if recipe.uses_encoder_cache() else None
    trainer = build_trainer(recipe, model, processor, data, training_args)
    timer = StepTimer()
    trainer.add_callback(timer)
    load_before = os.getloadavg()
    phases = {"after_data_gb": peak_memory()["peak_rss_gb"]}  # the process peak so far, phase by phase

    trainer.train()
    phases["after_train_gb"] = peak_memory()["peak_rss_gb"]
    clips_per_step = recipe.train.per_device_train_batch_size * recipe.train.gradient_accumulation_steps * \
        training_args.world_size
    steady = timer.times[1:] or timer.times
    step_s = statistics.median(steady)
    # Seconds of speech one sample carries: a clip's mean length, or a packed window's (padding excluded).
    speech_per_sample = data.train.speech_seconds() if isinstance(data.train, TrainingWindows) else \
        float(sum(data.train["duration"])) / len(data.train)

    eval_set = data.eval.select(range(min(args.eval_clips, len(data.eval))))
    start = time.perf_counter()
    trainer.predict(eval_set)
    eval_s = time.perf_counter() - start
    phases["after_eval_gb"] = peak_memory()["peak_rss_gb"]
    trainable, total = count_parameters(model)
    flops = step_flops(trainer, model, recipe.train_precision)
    peak = matmul_peak_gflops(PRECISION_DTYPES[recipe.train_precision], training_args.device)
    per_process_batch = recipe.train.per_device_train_batch_size
    achieved = flops / per_process_batch * clips_per_step / step_s / 1e9 / training_args.world_size
    return {
        "recipe": args.recipe, "overrides": args.overrides, "model": recipe.model.name,
        "device": str(training_args.device), "world_size": training_args.world_size,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "precision": recipe.train_precision,
        "gradient_checkpointing": recipe.train.gradient_checkpointing,
        "path": "decoder-only, cached encoder outputs" if recipe.uses_encoder_cache() else
                "full encoder+decoder LoRA" if recipe.lora.encoder else "decoder-only LoRA, encoder run every step",
        "windows": recipe.data.windows.mode, "encoder_cache_s": encoder_cache_s, "train_samples": len(data.train),
        "trainable_parameters": trainable, "total_parameters": total,
        "train": {
            "steps": steps, "clips_per_step": clips_per_step, "first_step_s": timer.times[0],
            "median_step_s": step_s, "s_per_sample": step_s / clips_per_step,
            "samples_per_s": clips_per_step / step_s,
            "speech_seconds_per_s": clips_per_step * speech_per_sample / step_s,
            "seconds_per_speech_hour": 3600 * step_s / (clips_per_step * speech_per_sample),
            "speech_seconds_per_sample": speech_per_sample, "step_times_s": timer.times,
            "flops_per_sample": flops / per_process_batch, "achieved_gflops": achieved,
            "matmul_peak_gflops": peak, "share_of_peak": achieved / peak,
        },
        "eval": {"clips": len(eval_set), "seconds": eval_s, "clips_per_s": len(eval_set) / eval_s,
                 "batch_size": recipe.eval.batch_size, "num_beams": recipe.eval.num_beams},
        "memory": {**peak_memory(), "peak_rss_by_phase": phases},
        "versions": package_versions(),
    }


PATHS = {"full": ["lora.encoder=true", "train.cache_encoder=false"],
         "cached": ["lora.encoder=false", "train.cache_encoder=true"]}
PRECISIONS = {"fp32": ["train.bf16=false", "train.fp16=false"], "bf16": ["train.bf16=true", "train.fp16=false"]}
VARIANTS = {f"{precision}-{path}{'-ckpt' if ckpt else ''}":
            [*PRECISIONS[precision], *PATHS[path], f"train.gradient_checkpointing={str(ckpt).lower()}",
             "data.windows.mode=none"]
            for path, precision, ckpt in itertools.product(PATHS, PRECISIONS, (False, True))}
# Packed 30-s windows (finetune/packing.py): the encoder reads speech instead of padding.
VARIANTS.update({f"{precision}-full-packed": [*PRECISIONS[precision], *PATHS["full"],
                                              "train.gradient_checkpointing=false", "data.windows.mode=packed"]
                 for precision in PRECISIONS})


def train_rows_overrides(args: argparse.Namespace) -> list[str]:
    """--train-rows N as `data.train.<i>.max_samples=N` for every train source of the recipe."""
    if not args.train_rows:
        return []
    sources = load_recipe(args.recipe, args.overrides).data.train
    return [f"data.train.{i}.max_samples={args.train_rows}" for i in range(len(sources))]


def compare(args: argparse.Namespace, workdir: str) -> dict:
    """Every selected variant in its own process; one JSON with all of them."""
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise RecipeError("benchmark", [f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}"])
    rows = train_rows_overrides(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for name in names:
        out = Path(workdir) / f"{name}.json"
        command = [sys.executable, str(Path(__file__).resolve()), args.recipe, *args.overrides, *rows,
                   *VARIANTS[name], "--steps", str(args.steps), "--eval-clips", str(args.eval_clips),
                   "--output", str(out)]
        print(f"benchmark: {name}: {' '.join(VARIANTS[name])}", file=sys.stderr, flush=True)
        done = subprocess.run(command)
        results.append({"variant": name, **(json.loads(out.read_text()) if done.returncode == 0 and out.is_file()
                                            else {"error": f"exit status {done.returncode}"})})
    return {
        "recipe": args.recipe, "overrides": args.overrides + rows, "steps": args.steps,
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "device": str(device),
        "matmul_peak_gflops": {"fp32": matmul_peak_gflops(torch.float32, device),
                               "bf16": matmul_peak_gflops(torch.bfloat16, device)},
        "load_average": os.getloadavg(), "variants": results, "versions": package_versions(),
    }


def training_rss_gb(result: dict) -> float:
    """Peak RSS by the end of training (evaluation and the FLOP count come later and may peak higher)."""
    return result["memory"].get("peak_rss_by_phase", {}).get("after_train_gb", result["memory"]["peak_rss_gb"])


def comparison_table(result: dict) -> str:
    """Markdown: one row per variant, speed-up against the first (fp32 full, unless --variants says otherwise)."""
    lines = ["| variant | path | s/sample | samples/s | speech s/s | s per speech hour | GFLOP/s | share of matmul "
             "peak | peak RSS training GB | eval clips/s | speech s/s vs first |", "|" + "---|" * 11]
    ok = [r for r in result["variants"] if "train" in r]
    first = ok[0]["train"]["speech_seconds_per_s"] if ok else None
    for r in result["variants"]:
        if "train" not in r:
            lines.append(f"| {r['variant']} | {r['error']} |" + " |" * 9)
            continue
        t = r["train"]
        path = r["path"] + (f", {r['windows']} windows" if r.get("windows", "none") != "none" else "")
        lines.append(f"| {r['variant']} | {path} | {t['s_per_sample']:.3f} | {t['samples_per_s']:.2f} | "
                     f"{t['speech_seconds_per_s']:.1f} | {t['seconds_per_speech_hour']:.0f} | "
                     f"{t['achieved_gflops']:.0f} | "
                     f"{100 * t['share_of_peak']:.0f} % | "
                     f"{training_rss_gb(r):.2f} | "
                     f"{r['eval']['clips_per_s']:.2f} | "
                     f"{t['speech_seconds_per_s'] / first:.2f}x |")
    peaks = result["matmul_peak_gflops"]
    return "\n".join(lines) + (f"\n\n{result['machine']}, {result['cpu_count']} CPUs, {result['device']}; matmul "
                               f"peak measured on the spot: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} "
                               f"GFLOP/s; {result['steps']} steps per variant (first = warm-up).\n")


def benchmark_runtimes(args: argparse.Namespace, workdir: str) -> dict:
    """The same audio through transformers' pipeline, scripts/transcribe.py's decoding and faster-whisper on
    CTranslate2 exports (int8, float32) made on the spot: seconds and x real time each (greedy, no fallback)."""
    from faster_whisper import WhisperModel
    from transformers import pipeline

    from finetune.export import convert, model_language
    from finetune.transcription import DecodeOptions, load_audio, load_for_inference, transcribe_batch

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


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark a recipe's training and evaluation speed.")
    parser.add_argument("recipe", nargs="?", help="recipe YAML (not with --runtimes)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for finetune/run.py")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps to time (the first is warm-up)")
    parser.add_argument("--eval-clips", type=int, default=16, help="eval clips to transcribe")
    parser.add_argument("--output", default="benchmark.json", help="JSON file to write (--compare: + .md)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="time data preparation alone (into an empty datasets cache): rows/s, peak RSS")
    parser.add_argument("--compare", action="store_true", help="run every variant (or --variants) and compare")
    parser.add_argument("--variants", default=None, help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    parser.add_argument("--train-rows", type=int, default=None,
                        help="use only the first N rows of each train source (bounds data and encoder-cache time)")
    parser.add_argument("--runtimes", metavar="MODEL_DIR", default=None,
                        help="instead of training: time transcription of --audio by transformers' pipeline, "
                             "scripts/transcribe.py and faster-whisper (CTranslate2 int8/float32) for a checkpoint")
    parser.add_argument("--audio", nargs="+", default=[], help="audio files for --runtimes")
    args = parser.parse_intermixed_args()
    setup_logging()
    if args.runtimes:
        if not args.audio:
            parser.error("--runtimes needs --audio FILE ...")
        with tempfile.TemporaryDirectory(prefix="finetune-bench-") as workdir:
            result = benchmark_runtimes(args, workdir)
        write_json(args.output, result)
        print(json.dumps(result["runtimes"], indent=2))
        return 0
    if args.recipe is None:
        parser.error("a recipe is needed (or --runtimes MODEL_DIR --audio FILE ...)")
    try:
        if not args.compare:  # --compare hands them to each variant's process
            args.overrides += train_rows_overrides(args)
        with tempfile.TemporaryDirectory(prefix="finetune-bench-") as workdir:
            run = compare if args.compare else benchmark_preparation if args.prepare_only else benchmark
            result = run(args, workdir)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.compare:
        write_json(args.output, result)
        table = comparison_table(result)
        write_text(Path(args.output).with_suffix(".md"), table)
        print(table)
        return 0 if all("train" in r for r in result["variants"]) else 1
    if is_main_process():
        write_json(args.output, result)
        shown = ("rows", "seconds", "rows_per_s", "memory", "cache_gb") if args.prepare_only else \
            ("device", "world_size", "torch_threads", "train", "eval", "memory")
        print(json.dumps({k: result[k] for k in shown}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
