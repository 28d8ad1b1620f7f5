"""`python scripts/push.py ARGS` is `finetune push ARGS`: see `finetune push --help`
(finetune/commands/push.py)."""

import sys

from finetune.cli import main

if __name__ == "__main__":
    sys.exit(main(["push", *sys.argv[1:]]))
