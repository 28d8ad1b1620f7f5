"""`python scripts/transcribe.py ARGS` is `finetune transcribe ARGS`: see `finetune transcribe --help`
(finetune/commands/transcribe.py)."""

import sys

from finetune.cli import main

if __name__ == "__main__":
    sys.exit(main(["transcribe", *sys.argv[1:]]))
