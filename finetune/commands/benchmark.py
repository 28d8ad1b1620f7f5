"""Measure a recipe's training and evaluation speed and memory on this machine; write JSON (+ Markdown).

Run as `finetune benchmark` (or `python scripts/benchmark.py`), examples below; what is measured and how:
finetune/speed.py. `--compare` runs the recipe under every variant (fp32/bf16 x full encoder+decoder LoRA /
decoder-only LoRA on cached encoder outputs x activation checkpointing off/on, and full LoRA on packed 30-s windows),
each in its own process (so each peak memory is its own), and writes benchmark.json + benchmark.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = """examples:
  finetune benchmark recipes/es-synth-base.yaml --steps 6 --eval-clips 16 --output benchmark.json
  finetune benchmark recipes/es-synth-base.yaml --compare --steps 4 --train-rows 40   # all variants
  finetune benchmark recipes/es-synth-base.yaml --compare --variants fp32-full,bf16-cached
  accelerate launch --multi_gpu --num_processes 2 -m finetune benchmark recipes/demo.yaml --steps 4   # 2 ranks
  finetune benchmark recipes/es-synth-base.yaml --prepare-only      # data preparation: time, peak RSS
  finetune benchmark --runtimes runs/es-synth-base/merged --audio long.flac clip*.flac   # inference runtimes"""


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
    from finetune.recipe import load_recipe

    if not args.train_rows:
        return []
    sources = load_recipe(args.recipe, args.overrides).data.train
    return [f"data.train.{i}.max_samples={args.train_rows}" for i in range(len(sources))]


def compare(args: argparse.Namespace, workdir: str) -> dict:
    """Every selected variant in its own process; one JSON with all of them."""
    import torch

    from finetune.outputs import package_versions
    from finetune.recipe import RecipeError
    from finetune.speed import matmul_peak_gflops

    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise RecipeError("benchmark", [f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}"])
    rows = train_rows_overrides(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for name in names:
        out = Path(workdir) / f"{name}.json"
        command = [sys.executable, "-m", "finetune", "benchmark", args.recipe, *args.overrides, *rows,
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe YAML (not with --runtimes)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for finetune train")
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
                             "finetune transcribe and faster-whisper (CTranslate2 int8/float32) for a checkpoint")
    parser.add_argument("--audio", nargs="+", default=[], help="audio files for --runtimes")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.runtimes and not args.audio:
        parser.error("--runtimes needs --audio FILE ...")
    if not args.runtimes and args.recipe is None:
        parser.error("a recipe is needed (or --runtimes MODEL_DIR --audio FILE ...)")


def run(args: argparse.Namespace) -> int:
    from finetune.outputs import is_main_process, write_json, write_text
    from finetune.runtimes import benchmark_runtimes
    from finetune.speed import benchmark, benchmark_preparation

    if args.runtimes:
        with tempfile.TemporaryDirectory(prefix="finetune-bench-") as workdir:
            result = benchmark_runtimes(args, workdir)
        write_json(args.output, result)
        print(json.dumps(result["runtimes"], indent=2))
        return 0
    if not args.compare:  # --compare hands them to each variant's process
        args.overrides += train_rows_overrides(args)
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as workdir:
        measure = compare if args.compare else benchmark_preparation if args.prepare_only else benchmark
        result = measure(args, workdir)
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
