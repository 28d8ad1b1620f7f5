"""`python scripts/export.py ARGS` is `finetune export ARGS`: see `finetune export --help`
(finetune/commands/export.py)."""

import sys

from finetune.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
