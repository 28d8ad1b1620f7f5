"""One run per output directory: which run a directory belongs to, where training starts, output-path checks.

Each complete checkpoint's mark (finetune/checkpoints.py) records the run's identity, a fingerprint of the recipe
keys that change training: `train.resume=auto` continues only the same recipe, and a new run never mixes its
checkpoints with another run's. The main process holds the directory's lock (finetune/lock.py) for the whole run
and decides; every rank receives the decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finetune.checkpoints import (MARK_FILE, RUN_OUTPUTS, clean_leftovers, complete_checkpoints, read_mark,
                                  remove_outputs)
from finetune.errors import UserError
from finetune.lock import LockBusy, OutputLock, hold_lock
from finetune.outputs import is_main_process, log
from finetune.recipe import Recipe, RecipeError

# Recipe keys that do not change what is trained (where outputs go, how they are reported and published, how many
# checkpoints are kept): a checkpoint written under different values of these is still the same run.
NOT_TRAINING = ("output_dir", "train.resume", "train.save_total_limit", "train.logging_steps",
                "train.dataloader_num_workers", "data.test", "eval.batch_size", "eval.baseline",
                "eval.guard_threshold", "eval.bootstrap_samples", "eval.confidence", "eval.worst_utterances",
                "output", "hub")
MIN_FREE_BYTES = 200 * 2**20  # checkpoints, reports and logs of even a tiny model


class OutputDirError(UserError, RuntimeError):
    """The output directory cannot be used as asked; the message says why and what to do (exit status 2)."""


@dataclass
class Claim:
    """What the main process decided about the output directory; shared with every rank."""

    output_dir: str
    resume: str | None  # checkpoint to continue from
    identity: dict[str, Any]
    fingerprint: str
    prior_seconds: float = 0.0  # training time of the sessions before this one
    prior_sessions: int = 0
    step: int = 0  # the last finished optimizer step of this session (for the interrupt message)
    started: float = field(default_factory=time.time)
    lock: OutputLock | None = field(default=None, repr=False)  # held by the main process until it exits

    def mark(self, step: int) -> dict[str, Any]:
        """The completion mark of the checkpoint at `step`."""
        return {"complete": True, "step": step, "fingerprint": self.fingerprint,
                "train_seconds": round(self.prior_seconds + time.time() - self.started, 3),
                "sessions": self.prior_sessions + 1, "identity": self.identity}

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


# ---------------------------------------------------------------------------------------------------------------
# Identity


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"seed": 1}} -> {"train.seed": 1}; lists stay values."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def training_identity(recipe: Recipe | dict[str, Any]) -> dict[str, Any]:
    """The recipe's keys that decide what is trained, flat (`train.learning_rate`: 0.001)."""
    raw = recipe.model_dump(mode="json") if isinstance(recipe, Recipe) else recipe
    return {k: v for k, v in sorted(flatten(raw).items())
            if not any(k == p or k.startswith(p + ".") for p in NOT_TRAINING)}


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 6) -> str:
    """'train.learning_rate 0.01 -> 0.05, ...' for the keys that differ."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    text = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:limit])
    return text + (f" and {len(keys) - limit} more" if len(keys) > limit else "") if keys else "nothing"


# ---------------------------------------------------------------------------------------------------------------
# Claiming the directory


def check_output_path(recipe: Recipe) -> None:
    """Every problem with where outputs go, as one message, before any work (and without writing anything)."""
    out = Path(recipe.output_dir).expanduser()
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problems = []
    if not existing.is_dir():
        problems.append(f"output_dir {str(out)!r}: {str(existing)!r} is a file, not a directory; choose another "
                        f"output_dir")
    elif not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"output_dir {str(out)!r}: no permission to write in {str(existing)!r}; choose a "
                        f"directory you can write to")
    else:
        free, need = shutil.disk_usage(existing).free, disk_needed(recipe)
        if free < need:
            problems.append(f"output_dir {str(out)!r}: {free / 2**20:.0f} MB free on its disk, this run needs at "
                            f"least ~{need / 2**20:.0f} MB (checkpoints, adapter, merged model, reports); free "
                            f"space or choose another disk")
    if problems:
        raise RecipeError("output_dir", problems)


def disk_needed(recipe: Recipe) -> int:
    """A floor for the bytes a run writes: the merged model (up to twice the weight files when fp16 weights are
    saved in fp32) plus a margin for checkpoints and reports. Models not on local disk count only the margin."""
    weights = Path(recipe.model.name).expanduser()
    files = [*weights.glob("*.safetensors"), *weights.glob("*.bin")] if weights.is_dir() else []
    return MIN_FREE_BYTES + (2 * sum(f.stat().st_size for f in files) if recipe.output.merge else 0)


_CURRENT: list[Claim] = []  # this process's claim, for the interrupt message


def claim_output_dir(recipe: Recipe, overwrite: bool = False) -> Claim:
    """Lock the directory (main process), decide where training starts, clean what interrupted runs left;
    every rank receives the same decision. Raises OutputDirError when the directory cannot be used as asked."""
    decision: Claim | None = None
    error: str | None = None
    if is_main_process():
        try:
            decision = _claim(recipe, overwrite)
        except (OutputDirError, LockBusy) as err:
            error = str(err)
    decision, error = share_from_main((decision, error))
    if error:
        raise OutputDirError(error)
    _CURRENT[:] = [decision]
    return decision


def share_from_main(value: Any) -> Any:
    """The main process's `value` on every rank (one process: unchanged)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _claim(recipe: Recipe, overwrite: bool) -> Claim:
    out = Path(recipe.output_dir).expanduser()
    lock = hold_lock(out)
    identity = training_identity(recipe)
    claim = Claim(str(out), None, identity, fingerprint(identity), lock=lock)
    try:
        if overwrite:
            remove_outputs(out)
        resume, mark = _resume_point(recipe, out, claim)
        clean_leftovers(out)  # after deciding: a refused run leaves the directory as it found it
    except BaseException:
        lock.release()
        raise
    if mark:
        claim.resume, claim.prior_seconds, claim.prior_sessions = resume, mark["train_seconds"], mark["sessions"]
    return claim


def _resume_point(recipe: Recipe, out: Path, claim: Claim) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint to continue from and its mark, or (None, None) to start fresh; refuses to mix runs."""
    resume = recipe.train.resume
    if isinstance(resume, str):  # an explicit checkpoint: the user's choice, even from another recipe
        mark = read_mark(Path(resume)) if Path(resume).is_dir() else None
        if mark is None:
            raise OutputDirError(f"train.resume={resume}: not a complete checkpoint (missing, or its save was "
                                 f"interrupted: no {MARK_FILE}). Complete ones: "
                                 f"{[str(c) for c in complete_checkpoints(Path(resume).parent)] or 'none'}")
        if mark["fingerprint"] != claim.fingerprint:
            log.warning("Resuming %s as asked, although its recipe differs in %s", resume,
                        differences(mark["identity"], claim.identity))
        return resume, mark
    done = complete_checkpoints(out)
    mark = read_mark(done[-1]) if done else None
    previous = mark["identity"] if mark else saved_identity(out)
    held = [p.name for p in done] + [name for name in RUN_OUTPUTS if (out / name).exists()]
    same = previous == claim.identity
    if resume is True and mark and same:
        log.info("Resuming from %s (step %d of the same recipe)", done[-1], mark["step"])
        return str(done[-1]), mark
    if not held or (resume is True and same):  # nothing there, or this recipe's outputs without a checkpoint
        return None, None
    whose = "this same recipe" if same else (f"another recipe (it differs in {differences(previous, claim.identity)})"
                                             if previous else "a run whose recipe is unknown")
    choices = (["train.resume=auto to continue it"] if same and mark else []) + \
        ["output_dir=<a new directory> for this run", "--overwrite to delete its outputs and start again"]
    raise OutputDirError(f"{out} already holds a run of {whose}: {', '.join(held)}. "
                         f"Choose: {'; or '.join(choices)}")


def saved_identity(out: Path) -> dict[str, Any] | None:
    """The training identity of the recipe.yaml a previous run saved in `out`, if readable."""
    try:
        raw = yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return training_identity(raw) if isinstance(raw, dict) else None


def interrupted_message() -> str | None:
    """The one line a Ctrl-C prints (main process): where training stood and how to continue."""
    if not is_main_process():
        return None
    if not _CURRENT:
        return "interrupted before training started"
    claim = _CURRENT[0]
    done = complete_checkpoints(Path(claim.output_dir))
    last = str(done[-1]) if done else "none yet"
    return (f"interrupted at step {claim.step}; the last complete checkpoint is {last}; rerun with "
            f"train.resume=auto to continue")
