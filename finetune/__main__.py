"""`python -m finetune ...` and `accelerate launch -m finetune train RECIPE`: the `finetune` command."""

import sys

from finetune.cli import main

sys.exit(main())
