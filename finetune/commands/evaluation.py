"""Evaluate a fine-tuned Whisper against its zero-shot base on a recipe's test sets; write the reports.

Run as `finetune evaluate`, examples below.

--choose-strength: on a trained run (its adapter/, or --adapter), choose the adapter strength again with the
recipe's eval and guard sets as it stands now (e.g. after adding a guard set, or changing output.scale_grid),
bake it into the adapter, merge it into <output_dir>/merged and write the run's reports: `finetune train`'s steps
7-9, from the adapter as trained.

Baseline: the recipe's base model (model.name), zero-shot. Fine-tuned: --model (a full checkpoint, e.g. a merged
one), or the base model with --adapter on top; by default <output_dir>/merged, else <output_dir>/adapter.
Writes report.json, report.md, report.html and predictions.jsonl to --output (default: the recipe's output_dir).
Decoding comes from the recipe's eval section (batch_size, num_beams, temperature, max_new_tokens) and
model.attn_implementation; `section.key=value` overrides work as in `finetune train`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

EXAMPLES = """examples:
  finetune evaluate recipes/es-synth-base.yaml                       # the run's merged/ (or adapter/)
  finetune evaluate recipes/es-synth-base.yaml --model runs/es-synth-base/merged --sets "es-synth test"
  finetune evaluate recipes/spanish.yaml --adapter runs/spanish-small/adapter eval.batch_size=64
  finetune evaluate recipes/demo.yaml --model openai/whisper-small --no-baseline --output eval-small
  finetune evaluate recipes/es-synth-base.yaml --choose-strength     # redo a run's steps 7-9
exit status: 0 reports written; 1 a guard set regressed significantly; 2 a recipe, model or lock problem"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for finetune train")
    parser.add_argument("--model", help="fine-tuned full checkpoint: a local directory or a Hub id")
    parser.add_argument("--adapter", help="LoRA adapter directory, applied to the recipe's base model")
    parser.add_argument("--sets", nargs="+", help="test set names (default: all the recipe lists)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the zero-shot base model")
    parser.add_argument("--output", help="report directory (default: the recipe's output_dir)")
    parser.add_argument("--choose-strength", action="store_true",
                        help="choose the adapter strength of a trained run again, merge and report (train's steps 7-9)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.choose_strength and (args.model or args.sets or args.no_baseline or args.output):
        parser.error("--choose-strength works on the run's adapter (or --adapter) with every test set of the recipe, "
                     "into its output_dir: --model, --sets, --no-baseline and --output do not apply")


def run(args: argparse.Namespace) -> int:
    from finetune.data import load_test_sets
    from finetune.lock import hold_lock
    from finetune.model import load_processor
    from finetune.outputs import log
    from finetune.recipe import load_recipe
    from finetune.report_text import final_line

    recipe = load_recipe(args.recipe, args.overrides)
    hold_lock(args.output or recipe.output_dir)  # a run training there would overwrite the reports
    if args.choose_strength:
        report = choose_strength(recipe, args.adapter)
    else:
        processor = load_processor(recipe.model)
        test, counts = load_test_sets(recipe.data, processor, args.sets)
        tuned, tuned_name = tuned_model(recipe, args.model, args.adapter)
        report = score(recipe, processor, test, counts, tuned, tuned_name, args)
    log.info("Done. %s", final_line(report))
    return 1 if report["regressions"] else 0


def score(recipe, processor, test, counts, tuned, tuned_name: str, args: argparse.Namespace) -> dict:
    """Zero-shot base (unless --no-baseline) vs `tuned` on the test sets; the reports written."""
    from peft import PeftModel

    from finetune.model import load_model
    from finetune.outputs import log
    from finetune.pipeline import configure
    from finetune.report import score_and_report
    from finetune.scoring import adapter_disabled

    models = {}
    if not args.no_baseline and isinstance(tuned, PeftModel):  # the base is already loaded under the adapter
        models["zero_shot"] = lambda: adapter_disabled(tuned)
    elif not args.no_baseline:
        base = configure(load_model(recipe.model), recipe)
        models["zero_shot"] = lambda: contextlib.nullcontext(base)
    models["fine_tuned"] = lambda: contextlib.nullcontext(tuned)
    log.info("Zero-shot: %s; fine-tuned: %s", recipe.model.name if not args.no_baseline else "(skipped)", tuned_name)
    return score_and_report(recipe, models, processor, test, counts, {"fine_tuned_model": tuned_name},
                            training_history(recipe.output_dir), next(tuned.parameters()).device.type,
                            output_dir=args.output)


def tuned_model(recipe, model: str | None, adapter: str | None):
    """The fine-tuned model to score: --model, base + --adapter, or the run's merged/ or adapter/."""
    from finetune.adapter_scale import baked_scale
    from finetune.merge import MERGED_DIR
    from finetune.model import load_model
    from finetune.pipeline import build_model, configure
    from finetune.recipe import RecipeError
    from finetune.train import ADAPTER_DIR

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
        loaded = build_model(recipe, adapter)
        return loaded, f"{recipe.model.name} + adapter {adapter} (strength {baked_scale(adapter):g})"
    try:
        loaded = load_model(recipe.model.model_copy(update={"name": model, "revision": None}))
    except RecipeError as err:  # its wording names the recipe's model.name, which is not what was given here
        raise RecipeError("evaluate", [p.replace("model.name", "--model", 1) for p in err.problems]) from None
    return configure(loaded, recipe), model


def trainer_state(output_dir: str) -> dict:
    """The Trainer's state in the newest checkpoint of the run, if there is one (log history for the plots)."""
    states = sorted(Path(output_dir).glob("checkpoint-*/trainer_state.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(states[-1].read_text()) if states else {}


def training_history(output_dir: str) -> list[dict]:
    return trainer_state(output_dir).get("log_history", [])


def choose_strength(recipe, adapter: str | None) -> dict:
    """finetune train's steps 7-9 on a trained run: strength search from the adapter as trained, bake, merge,
    report. Returns the report."""
    from finetune.adapter_scale import adapter_strength, bake_scale
    from finetune.data import first_rows
    from finetune.merge import merge_adapter
    from finetune.model import load_processor
    from finetune.pipeline import build_data, build_model
    from finetune.recipe import RecipeError
    from finetune.report import final_report
    from finetune.train import ADAPTER_DIR

    adapter_dir = Path(adapter) if adapter else Path(recipe.output_dir) / ADAPTER_DIR
    if not (adapter_dir / "adapter_config.json").is_file():
        raise RecipeError("evaluate", [f"--choose-strength: no adapter in {str(adapter_dir)!r} (adapter_config.json); "
                                       "train first or pass --adapter"])
    bake_scale(adapter_dir, 1.0)  # the search starts from the adapter as trained
    processor = load_processor(recipe.model)
    model = build_model(recipe, adapter_dir)
    data = build_data(recipe, processor, model)
    strength = adapter_strength(recipe, model, processor, data, adapter_dir)
    merged = merge_adapter(recipe, adapter_dir, processor, first_rows(data.eval, recipe.output.parity_clips)) \
        if recipe.output.merge else None
    state = trainer_state(recipe.output_dir)
    history = state.get("log_history", [])
    training = {"global_step": state.get("global_step", 0), "best_checkpoint": state.get("best_model_checkpoint"),
                "best_metric": state.get("best_metric"),
                **{k: v for h in history for k, v in h.items() if k.startswith("train_")}}
    return final_report(recipe, model, processor, data, training, history, merged, strength)
