"""The `finetune` subcommands other than train/check (finetune/run.py), one module each: EXAMPLES,
add_arguments(parser), optionally check_arguments(parser, args), and run(args) -> exit status.

They import torch/transformers inside run(), so `finetune COMMAND --help` answers without loading them.
"""
