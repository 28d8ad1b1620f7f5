"""Fine-tune Whisper with LoRA adapters from a recipe, then score, merge and report.

Run as (`finetune train ...` and `accelerate launch -m finetune train ...` are the same command):
    accelerate launch finetune/run.py recipes/spanish.yaml                      # one or many GPUs
    accelerate launch finetune/run.py recipes/spanish.yaml train.learning_rate=5.0e-4 output_dir=runs/es-lr5e-4
    python finetune/run.py recipes/demo.yaml model.name=/path/to/whisper-tiny    # one process, local model
    python finetune/run.py recipes/spanish.yaml --check    # validate recipe, data and model; writes nothing
    python finetune/run.py recipes/spanish.yaml --overwrite    # delete output_dir's previous run, start again

Exit status: 0 done; 2 a recipe, data or output_dir problem (the message says what to change); 130 interrupted
(rerun with train.resume=auto to continue from the last complete checkpoint).

One run per output_dir (a second one exits 2); train.resume=auto continues only a checkpoint of the same recipe.
Outputs in <output_dir>: recipe.yaml, environment.json, dropped_rows.jsonl, checkpoint-*/, adapter/ (best
adapter + processor), merged/ (full checkpoint for transformers.pipeline), report.json, report.md, report.html,
predictions.jsonl; hub-upload/ when hub.push is set; tensorboard/ with train.report_to=tensorboard. The adapter
and the merged model carry the adapter strength chosen in step 7 (output.adapter_scale).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a file: Python put finetune/ first on sys.path; the project root is what counts
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from finetune.adapter_scale import adapter_strength  # noqa: E402
from finetune.data import first_rows  # noqa: E402
from finetune.data_counts import counts_table, save_data_report  # noqa: E402
from finetune.hub import publish  # noqa: E402
from finetune.merge import merge_adapter  # noqa: E402
from finetune.model import count_parameters, load_processor  # noqa: E402
from finetune.outputs import is_main_process, log, save_run_info  # noqa: E402
from finetune.pipeline import build_data, build_model, build_training, trained_model  # noqa: E402
from finetune.recipe import load_recipe  # noqa: E402
from finetune.report import final_report  # noqa: E402
from finetune.report_text import final_line  # noqa: E402
from finetune.run_dir import check_output_path, claim_output_dir  # noqa: E402
from finetune.train import check_cpu_threads, save_adapter, train, training_arguments  # noqa: E402

EXAMPLES = """examples:
  finetune train recipes/spanish.yaml
  accelerate launch -m finetune train recipes/spanish.yaml train.learning_rate=5.0e-4 output_dir=runs/es-lr5e-4
  finetune train recipes/demo.yaml model.name=/path/to/whisper-tiny
  finetune train recipes/spanish.yaml --overwrite     # delete output_dir's previous run, start again
  finetune train recipes/spanish.yaml train.resume=auto   # continue from the last complete checkpoint
exit status: 0 done; 2 a recipe, data or output_dir problem; 130 interrupted"""
CHECK_EXAMPLES = """examples:
  finetune check recipes/spanish.yaml
  finetune check recipes/spanish.yaml model.name=openai/whisper-small data.num_proc=8
exit status: 0 usable; 2 a recipe, data, model or output_dir problem (every problem listed)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/spanish.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.learning_rate=5.0e-4")
    parser.add_argument("--check", action="store_true",
                        help="validate recipe, data, model and output_dir; train nothing, write nothing")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the outputs of the run output_dir already holds, then start afresh")


def run(args: argparse.Namespace) -> int:
    # 1. Recipe: YAML + overrides, validated; every problem is reported at once, output_dir's too.
    recipe = load_recipe(args.recipe, args.overrides)
    check_output_path(recipe)

    # 2. Training arguments (trackers in train.report_to checked): this also joins the process group when started
    #    by `accelerate launch`.
    training_args = training_arguments(recipe)
    log.info("Recipe %s, world size %d, device %s", args.recipe, training_args.world_size, training_args.device)
    check_cpu_threads(training_args)

    # 3. Output directory (not with --check, which writes nothing): locked for this run; where training starts
    #    (train.resume=auto: the last complete checkpoint of the same recipe); leftovers of killed runs cleaned.
    claim = None if args.check else claim_output_dir(recipe, args.overwrite)
    if claim and is_main_process():
        save_run_info(recipe, sys.argv, training_args.world_size)

    # 4. Processor and model: base Whisper, language/task/decoding on its generation config, SpecAugment, LoRA.
    processor = load_processor(recipe.model)
    model = build_model(recipe)
    log.info("Trainable parameters: %d of %d", *count_parameters(model))

    # 5. Data: decoded to 16 kHz mono, tokenized, filtered (drops counted per source), cached; the main process
    #    prepares it first. Replay sources are mixed into train; unlabeled ones are transcribed once by the base model.
    data = build_data(recipe, processor, model, training_args)
    if args.check:
        print(counts_table(data.counts))
        log.info("Check passed: recipe, model, data and output_dir are usable. Nothing was trained or written.")
        return 0
    log.info("Data:\n%s", counts_table(data.counts))
    if is_main_process():
        log.info("Dropped rows, with reasons: %s", save_data_report(recipe.output_dir, data.counts))

    # 6. Train (frozen encoder: on encoder outputs computed once); the best adapter by eval WER is saved to
    #    <output_dir>/adapter.
    trainer, train_data = build_training(recipe, model, processor, data, training_args, claim)
    training = train(trainer)
    adapter_dir = save_adapter(trainer, recipe.output_dir)
    if not is_main_process():  # steps 7-10 run on the main process alone
        return 0
    tuned = trained_model(trainer, recipe, adapter_dir)  # sharded training (FSDP, ZeRO-3): from the saved adapter

    # 7. Adapter strength: score strengths between the base model (0) and the adapter as trained (1) on the eval
    #    set and the guard sets; the best one that keeps every guard set is baked into the adapter.
    strength = adapter_strength(recipe, tuned, processor, train_data, adapter_dir)

    # 8. Merge the adapter at that strength into a full checkpoint and check parity.
    merged = merge_adapter(recipe, adapter_dir, processor, first_rows(data.eval, recipe.output.parity_clips)) \
        if recipe.output.merge else None

    # 9. Evaluate and report: zero-shot vs fine-tuned on every test set, with error bars -> report.{json,md,html}.
    report = final_report(recipe, tuned, processor, data, training, trainer.state.log_history, merged, strength)

    # 10. Publish (hub.push): adapter and/or merged model with a model card; failures leave outputs be.
    publish(recipe)
    log.info("Done. %s", final_line(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python finetune/run.py ARGS` is `finetune train ARGS`."""
    from finetune.cli import main as finetune

    return finetune(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
