"""The output directory: atomic writes, the saved recipe and package versions, main-process-only logging."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import shutil
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from finetune.recipe import Recipe, dump

log = logging.getLogger("finetune")
PACKAGES = ["finetune", "torch", "transformers", "peft", "datasets", "accelerate", "evaluate", "jiwer", "torchcodec"]


def slug(name: str) -> str:
    """A name safe in file names and ids: runs of other characters become one underscore."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def rank() -> int:
    """Global rank from the launcher's environment (torchrun / accelerate set RANK); 0 when run directly."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def setup_logging() -> None:
    """INFO on the main process, warnings only on the others, so N ranks print one log."""
    level = logging.INFO if is_main_process() else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger("finetune").setLevel(level)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `final` in one rename, on error it is removed.

    A reader never sees a half-written directory, and an interrupted write leaves the previous one intact.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    """Write through a temporary file and a rename, so the file is either the old one or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save_run_info(recipe: Recipe, argv: list[str], world_size: int) -> None:
    """The resolved recipe (every default filled in) and the environment, next to the outputs."""
    out = Path(recipe.output_dir)
    write_text(out / "recipe.yaml", dump(recipe))
    write_json(out / "environment.json", {"command": argv, "world_size": world_size, **package_versions()})
