"""The `finetune` command: one entry point with a subcommand per job.

Run as:
    finetune --help                                   # the subcommands
    finetune train recipes/spanish.yaml               # = accelerate launch finetune/run.py recipes/spanish.yaml
    accelerate launch -m finetune train recipes/spanish.yaml    # one or many GPUs
    finetune check recipes/spanish.yaml               # validate recipe, data, model, output_dir; write nothing
    finetune evaluate recipes/spanish.yaml --model runs/spanish-small/merged
    finetune transcribe call.wav --model runs/spanish-small/merged --output_format srt
    finetune export runs/spanish-small/merged --output runs/spanish-small/ct2-int8
    finetune push runs/spanish-small --dry-run
    finetune benchmark recipes/es-synth-base.yaml --steps 6

Only the chosen subcommand's module is imported, so `finetune --help` answers at once. Errors a user can fix print
one message and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from finetune import __version__
from finetune.errors import UserError


@dataclass(frozen=True)
class Command:
    module: str  # holds the examples, add_arguments(parser) and run(args) -> exit status
    help: str
    examples: str = "EXAMPLES"  # the module's attribute shown under --help
    check: bool = False  # finetune.run's --check, always on
    training: bool = False  # Ctrl-C says where the run can resume


COMMANDS = {
    "train": Command("finetune.run", "fine-tune Whisper with LoRA from a recipe, then score, merge and report",
                     training=True),
    "check": Command("finetune.run", "validate a recipe, its data, model and output_dir; train and write nothing",
                     examples="CHECK_EXAMPLES", check=True, training=True),
    "evaluate": Command("finetune.commands.evaluation", "score a fine-tuned model against its zero-shot base on a "
                                                        "recipe's test sets; reports"),
    "transcribe": Command("finetune.commands.transcribe", "transcribe audio/video files of any length (txt, vtt, "
                                                          "srt, tsv, json, as the whisper CLI)"),
    "export": Command("finetune.commands.export", "export a merged model to CTranslate2 (faster-whisper), checked"),
    "push": Command("finetune.commands.push", "publish a finished run's adapter and/or merged model to the Hub"),
    "benchmark": Command("finetune.commands.benchmark", "measure training/eval speed and memory of a recipe; JSON"),
}


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__.split("\n")[0],
                                     epilog="Each subcommand has its own --help with examples.")
    parser.add_argument("--version", action="version", version=f"finetune {__version__}")
    commands = parser.add_subparsers(title="subcommands", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written; every option's default shown."""


def command_parser(name: str) -> tuple[argparse.ArgumentParser, ModuleType]:
    """The full parser of one subcommand, and its module (imported now)."""
    command = COMMANDS[name]
    module = importlib.import_module(command.module)
    parser = argparse.ArgumentParser(prog=f"finetune {name}", description=command.help,
                                     epilog=getattr(module, command.examples), formatter_class=HelpFormatter)
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        top_parser().parse_args(argv)  # prints the help, the version, or what is wrong (exit 0 or 2)
        return 2
    parser, module = command_parser(argv[0])
    args = parser.parse_intermixed_args(argv[1:])
    if hasattr(module, "check_arguments"):
        module.check_arguments(parser, args)  # combinations argparse cannot express: usage error, exit 2
    command = COMMANDS[argv[0]]
    if command.check:
        args.check = True
    return guarded(module.run, args, training=command.training)


def guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace, training: bool = False) -> int:
    """Run a command: a problem the user can fix is one message and exit 2, Ctrl-C one line and exit 130 (a
    training run's line says where it can resume; other ranks print none)."""
    from finetune.outputs import setup_logging
    from finetune.run_dir import interrupted_message

    setup_logging()
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # not a traceback; a training run says where it can resume
        message = interrupted_message() if training else "interrupted"
        if message:
            print(f"error: {message}", file=sys.stderr)
        return 130
