"""Checkpoints that count only when complete, and what interrupted writes leave behind.

The Trainer writes a checkpoint in place, file by file: a kill during a save leaves a folder that looks like a
checkpoint and is not one. `finetune_checkpoint.json` is written into it last, once every rank's files are on
disk; folders without it are ignored and removed. Deletions rename first, so a half-deleted folder never passes
for a checkpoint either.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from finetune.outputs import log, write_json

MARK_FILE = "finetune_checkpoint.json"  # written last into a checkpoint: present = complete
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
LEFTOVER = re.compile(r"^\..+\.(tmp|old|deleting)-\d+$")  # temporary names of atomic writes and deletions
# What a finished or running run leaves; their presence means the directory holds a run.
RUN_OUTPUTS = ["adapter", "merged", "report.json"]
# Also removed by --overwrite (written by every run; alone they do not make a directory "hold a run").
RUN_FILES = ["report.md", "report.html", "predictions.jsonl", "recipe.yaml", "environment.json", "dropped_rows.jsonl",
             "hub-upload"]


def checkpoints(out: Path) -> list[Path]:
    """checkpoint-N folders, by step."""
    found = [p for p in out.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)] if out.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def read_mark(checkpoint: Path) -> dict[str, Any] | None:
    """The completion mark, or None when the checkpoint is incomplete (or from before marks existed)."""
    try:
        mark = json.loads((checkpoint / MARK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) and mark.get("complete") else None


def complete_checkpoints(out: Path) -> list[Path]:
    return [c for c in checkpoints(out) if read_mark(c)]


def mark_complete(checkpoint: Path, mark: dict[str, Any]) -> None:
    write_json(checkpoint / MARK_FILE, mark)


def remove_dir(path: Path) -> None:
    """Delete a folder so that no half-deleted copy can pass for it: renamed away first, then removed."""
    doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def rotate(out: Path, keep: int | None, best: str | None) -> None:
    """Keep the newest `keep` complete checkpoints plus the best one (the Trainer's own rotation is off: it counted
    incomplete folders and deleted in place)."""
    if not keep:
        return
    done = complete_checkpoints(out)
    protected = {done[-1].resolve()} if done else set()
    if best:
        protected.add(Path(best).resolve())
    removable = [c for c in done if c.resolve() not in protected]
    for checkpoint in removable[:max(0, len(done) - max(keep, len(protected)))]:
        log.info("Deleting older checkpoint %s (train.save_total_limit=%d)", checkpoint, keep)
        remove_dir(checkpoint)


def clean_leftovers(out: Path) -> None:
    """Finish what a killed run left half done: an interrupted swap gets its previous copy back; temporary folders
    and files of atomic writes, half-deleted checkpoints and incomplete checkpoints are removed."""
    if not out.is_dir():
        return
    for old in out.glob(".*.old-*"):
        final = out / old.name[1:].rsplit(".old-", 1)[0]
        if not final.exists():  # killed between the two renames: the previous version is the complete one
            log.warning("Restoring %s from %s (a replacement was interrupted)", final, old.name)
            old.rename(final)
    for path in out.iterdir():
        if LEFTOVER.match(path.name):
            log.info("Removing %s, left by an interrupted write", path)
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    for checkpoint in checkpoints(out):
        if not read_mark(checkpoint):
            log.warning("Ignoring and removing %s: it is incomplete (a save was interrupted; no %s)", checkpoint,
                        MARK_FILE)
            remove_dir(checkpoint)


def remove_outputs(out: Path) -> None:
    """--overwrite: delete every output of a previous run (and nothing else the directory holds)."""
    for path in [*checkpoints(out), *(out / name for name in RUN_OUTPUTS + RUN_FILES)]:
        if path.is_dir():
            remove_dir(path)
        elif path.exists():
            path.unlink()
    log.warning("--overwrite: removed the previous run's outputs from %s", out)
