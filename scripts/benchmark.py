"""`python scripts/benchmark.py ARGS` is `finetune benchmark ARGS`: see `finetune benchmark --help`
(finetune/commands/benchmark.py)."""

import sys

from finetune.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
