"""Evaluate a fine-tuned Whisper against its zero-shot base on a recipe's test sets; write the reports.

Run as:
    python scripts/evaluate.py recipes/es-synth-base.yaml                       # the run's merged/ (or adapter/)
    python scripts/evaluate.py recipes/es-synth-base.yaml --model runs/es-synth-base/merged --sets "es-synth test"
    python scripts/evaluate.py recipes/spanish.yaml --adapter runs/spanish-small/adapter eval.batch_size=64
    python scripts/evaluate.py recipes/demo.yaml --model openai/whisper-small --no-baseline --output eval-small

Baseline: the recipe's base model (model.name), zero-shot. Fine-tuned: --model (a full checkpoint, e.g. a merged
one), or the base model with --adapter on top; by default <output_dir>/merged, else <output_dir>/adapter.
Writes report.json, report.md, report.html and predictions.jsonl to --output (default: the recipe's output_dir).
Decoding comes from the recipe's eval section (batch_size, num_beams, temperature, max_new_tokens) and
model.attn_implementation; `section.key=value` overrides work as in finetune/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

# This file's folder comes first on sys.path, and this file is named like the `evaluate` package that the metric
# modules import: put the project root there instead, so `import evaluate` finds the package.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from peft import PeftModel  # noqa: E402

from finetune.data import load_test_sets  # noqa: E402
from finetune.merge import MERGED_DIR  # noqa: E402
from finetune.metrics import normalizer_for  # noqa: E402
from finetune.model import load_model, load_processor, precision_context, set_decoding  # noqa: E402
from finetune.outputs import log, setup_logging  # noqa: E402
from finetune.recipe import RecipeError, load_recipe  # noqa: E402
from finetune.report import adapter_disabled, build_report, final_line, score_sets, write_reports  # noqa: E402
from finetune.train import ADAPTER_DIR  # noqa: E402


def tuned_model(recipe, model: str | None, adapter: str | None):
    """The fine-tuned model to score: --model, base + --adapter, or the run's merged/ or adapter/."""
    out = Path(recipe.output_dir)
    if model is None and adapter is None:
        if (out / MERGED_DIR).is_dir():
            model = str(out / MERGED_DIR)
        elif (out / ADAPTER_DIR).is_dir():
            adapter = str(out / ADAPTER_DIR)
        else:
            raise RecipeError("evaluate", [f"{out} has neither {MERGED_DIR}/ nor {ADAPTER_DIR}/: pass --model or "
                                           "--adapter, or train first"])
    if adapter is not None:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise RecipeError("evaluate", [f"--adapter {adapter!r}: no adapter_config.json there"])
        loaded = PeftModel.from_pretrained(load_model(recipe.model), adapter)
        set_decoding(loaded.get_base_model(), recipe.eval)
        return loaded, f"{recipe.model.name} + adapter {adapter}"
    loaded = load_model(recipe.model.model_copy(update={"name": model, "revision": None}))
    set_decoding(loaded, recipe.eval)
    return loaded, model


def training_history(output_dir: str) -> list[dict]:
    """The Trainer's log history from the newest checkpoint of the run, if there is one (for the plots)."""
    states = sorted(Path(output_dir).glob("checkpoint-*/trainer_state.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(states[-1].read_text())["log_history"] if states else []


def main() -> int:
    parser = argparse.ArgumentParser(description="Evaluate zero-shot vs fine-tuned Whisper on a recipe's test sets.")
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for finetune/run.py")
    parser.add_argument("--model", help="fine-tuned full checkpoint: a local directory or a Hub id")
    parser.add_argument("--adapter", help="LoRA adapter directory, applied to the recipe's base model")
    parser.add_argument("--sets", nargs="+", help="test set names (default: all the recipe lists)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the zero-shot base model")
    parser.add_argument("--output", help="report directory (default: the recipe's output_dir)")
    args = parser.parse_intermixed_args()
    setup_logging()
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        processor = load_processor(recipe.model)
        test, counts = load_test_sets(recipe.data, processor, args.sets)
        tuned, tuned_name = tuned_model(recipe, args.model, args.adapter)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    models = {}
    if not args.no_baseline and isinstance(tuned, PeftModel):  # the base is already loaded under the adapter
        models["zero_shot"] = lambda: adapter_disabled(tuned)
    elif not args.no_baseline:
        base = load_model(recipe.model)
        set_decoding(base, recipe.eval)
        models["zero_shot"] = lambda: contextlib.nullcontext(base)
    models["fine_tuned"] = lambda: contextlib.nullcontext(tuned)
    log.info("Zero-shot: %s; fine-tuned: %s", recipe.model.name if not args.no_baseline else "(skipped)", tuned_name)
    language = recipe.model.language
    with precision_context(next(tuned.parameters()).device.type, recipe.eval_precision):  # eval.precision
        sets = score_sets(models, processor, test, recipe.data.test_sets, recipe.eval, language)
    normalizer = normalizer_for(language, processor.tokenizer)[0]
    report, predictions = build_report(sets, recipe.eval_settings(), language, normalizer,
                                       {"fine_tuned_model": tuned_name}, training_history(recipe.output_dir), None,
                                       counts)
    write_reports(args.output or recipe.output_dir, report, predictions)
    log.info("Done. %s", final_line(report))
    return 1 if report["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
