"""Training and evaluation speed and memory of a recipe on this machine (what `finetune benchmark` measures).

Trains a few optimizer steps through the same pipeline as `finetune train` (no evaluation, no checkpoints), then
generates on eval clips. The first step is reported apart (warm-up); rates use the steps after it. FLOPs per step
are counted by torch's FlopCounterMode on one extra forward + backward of a training batch, and set against a
matmul peak measured on the spot. Speed is given per sample and per second of speech trained (padding excluded):
a packed window carries several clips. Numbers are for the machine they ran on: threads, world size, device and
load are recorded with them.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers import TrainerCallback

from finetune.data import load_data
from finetune.model import PRECISION_DTYPES, count_parameters, load_processor, precision_context
from finetune.outputs import package_versions
from finetune.packing import TrainingWindows
from finetune.pipeline import build_data, build_model, build_training
from finetune.recipe import load_recipe
from finetune.train import training_arguments


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
    model = build_model(recipe)
    data = build_data(recipe, processor, model, training_args)
    start = time.perf_counter()  # the trainer is built in no time; the encoder cache (fast path) is not
    trainer, data = build_training(recipe, model, processor, data, training_args)
    encoder_cache_s = time.perf_counter() - start if recipe.uses_encoder_cache() else None
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
