"""Measure a recipe's training and evaluation speed and memory on this machine; write JSON.

Run as:
    python scripts/benchmark.py recipes/es-synth-base.yaml --steps 6 --eval-clips 16 --output benchmark.json
    accelerate launch --multi_gpu --num_processes 2 scripts/benchmark.py recipes/demo.yaml --steps 4   # 2 ranks
    python scripts/benchmark.py recipes/demo.yaml model.name=/path/to/whisper-tiny train.bf16=true
    python scripts/benchmark.py recipes/es-synth-base.yaml --prepare-only      # data preparation: time, peak RSS

Trains `--steps` optimizer steps (no evaluation, no checkpoints, outputs in a temporary directory), then generates
on the first `--eval-clips` eval clips. The first step is reported apart (warm-up); rates use the steps after it.
Numbers are for the machine they ran on: the JSON records threads, world size, device and load with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The project root instead of scripts/ first on sys.path: scripts/evaluate.py would shadow the `evaluate` package.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from finetune.data import load_data  # noqa: E402
from finetune.model import add_lora, count_parameters, load_model, load_processor, set_decoding  # noqa: E402
from finetune.outputs import is_main_process, package_versions, setup_logging, write_json  # noqa: E402
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
    return {
        "recipe": args.recipe, "overrides": args.overrides, "mode": "prepare-only", "rows": rows,
        "kept": sum(c.kept for c in data.counts), "seconds": seconds, "rows_per_s": rows / seconds,
        "audio_hours": sum(c.hours for c in data.counts), "cache_features": recipe.data.cache_features,
        "num_proc": recipe.data.num_proc, "peak_rss_gb_before": rss_before, "memory": peak_memory(),
        "cache_gb": sum(f.stat().st_size for f in (Path(workdir) / "datasets-cache").rglob("*") if f.is_file())
        / 1024**3,
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
    trainer = build_trainer(recipe, model, processor, data, training_args)
    timer = StepTimer()
    trainer.add_callback(timer)
    load_before = os.getloadavg()

    trainer.train()
    clips_per_step = recipe.train.per_device_train_batch_size * recipe.train.gradient_accumulation_steps * \
        training_args.world_size
    steady = timer.times[1:] or timer.times
    step_s = statistics.median(steady)
    mean_clip_s = float(sum(data.train["duration"])) / len(data.train)

    eval_set = data.eval.select(range(min(args.eval_clips, len(data.eval))))
    start = time.perf_counter()
    trainer.predict(eval_set)
    eval_s = time.perf_counter() - start
    trainable, total = count_parameters(model)
    return {
        "recipe": args.recipe, "overrides": args.overrides, "model": recipe.model.name,
        "device": str(training_args.device), "world_size": training_args.world_size,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "precision": "bf16" if recipe.train.bf16 else "fp16" if recipe.train.fp16 else "fp32",
        "gradient_checkpointing": recipe.train.gradient_checkpointing,
        "trainable_parameters": trainable, "total_parameters": total,
        "train": {
            "steps": steps, "clips_per_step": clips_per_step, "first_step_s": timer.times[0],
            "median_step_s": step_s, "s_per_sample": step_s / clips_per_step,
            "samples_per_s": clips_per_step / step_s,
            "audio_seconds_per_s": clips_per_step * mean_clip_s / step_s,  # mean clip length x clips per second
            "mean_clip_s": mean_clip_s, "step_times_s": timer.times,
        },
        "eval": {"clips": len(eval_set), "seconds": eval_s, "clips_per_s": len(eval_set) / eval_s,
                 "batch_size": recipe.eval.batch_size, "num_beams": recipe.eval.num_beams},
        "memory": peak_memory(),
        "versions": package_versions(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark a recipe's training and evaluation speed.")
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for finetune/run.py")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps to time (the first is warm-up)")
    parser.add_argument("--eval-clips", type=int, default=16, help="eval clips to transcribe")
    parser.add_argument("--output", default="benchmark.json", help="JSON file to write")
    parser.add_argument("--prepare-only", action="store_true",
                        help="time data preparation alone (into an empty datasets cache): rows/s, peak RSS")
    args = parser.parse_intermixed_args()
    setup_logging()
    try:
        with tempfile.TemporaryDirectory(prefix="finetune-bench-") as workdir:
            result = (benchmark_preparation if args.prepare_only else benchmark)(args, workdir)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_main_process():
        write_json(args.output, result)
        shown = ("rows", "seconds", "rows_per_s", "memory", "cache_gb") if args.prepare_only else \
            ("device", "world_size", "torch_threads", "train", "eval", "memory")
        print(json.dumps({k: result[k] for k in shown}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
