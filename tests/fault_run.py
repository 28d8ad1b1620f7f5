"""finetune/run.py with a kill -9 at a chosen point: FAULT=<point>:<n> kills the process on the n-th call of the
function named by <point>, the way an OOM killer or a power cut would (no cleanup, no atexit). Tests only.

Run as:
    FAULT=report:2 python tests/fault_run.py recipe.yaml output_dir=runs/x
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.trainer_callback import TrainerState  # noqa: E402

import finetune.merge  # noqa: E402
import finetune.report  # noqa: E402
import finetune.train  # noqa: E402
from finetune import run  # noqa: E402


def points() -> dict[str, tuple[object, str]]:
    """Where a kill can land: (owner, attribute) of the function whose n-th call dies."""
    return {
        "train": (finetune.train.WhisperTrainer, "training_step"),  # in the middle of training
        "save-weights": (torch, "save"),  # checkpoint save: optimizer/scheduler/RNG files, n-th file
        "save-state": (TrainerState, "save_to_json"),  # checkpoint save: files written, trainer state not yet
        "save-mark": (finetune.train, "mark_complete"),  # checkpoint save: everything but the completion mark
        "adapter": (transformers.WhisperProcessor, "save_pretrained"),  # 1: adapter/, 2: merged/ (temporary dirs)
        "merge": (finetune.merge, "transcripts"),  # 2: merged/ written, parity not checked yet
        "report": (finetune.report, "write_text"),  # n-th report file
    }


def arm(spec: str) -> None:
    name, n = spec.split(":")
    owner, attribute = points()[name]
    real, calls = getattr(owner, attribute), [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(n):
            print(f"FAULT: kill -9 at {name} call {n}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(owner, attribute, dying)


if __name__ == "__main__":
    if os.environ.get("FAULT"):
        arm(os.environ["FAULT"])
    sys.exit(run.main())
