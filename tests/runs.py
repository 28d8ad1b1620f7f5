"""Runs as a user starts them, in a subprocess: `finetune train` (finetune/run.py) on one process or two gloo ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN = str(ROOT / "finetune" / "run.py")
MODULE = ["-m", "finetune", "train"]  # after a launcher: accelerate launch -m finetune train
CONFIGS = ROOT / "recipes" / "accelerate"  # the shipped accelerate configs


def launcher(config: str = "cpu-ddp.yaml", processes: int = 2) -> list[str]:
    """`accelerate launch` with a shipped config, `processes` ranks of one thread each (gloo on CPU)."""
    return ["-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config), "--num_processes",
            str(processes), "--num_cpu_threads_per_process", "1"]


# Two gloo ranks on CPU (cpu-ddp.yaml: `--cpu --num_processes 2` would silently run ONE process).
TWO_RANKS = launcher()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(recipe: dict, tmp_path: Path, *overrides: str, launcher: list[str] | None = None,
            check: bool = True, env: dict | None = None, entry: list[str] | None = None) -> subprocess.CompletedProcess:
    """The recipe written to tmp_path, trained by `python finetune/run.py` (or `entry`, e.g. MODULE)."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    launch = launcher + ["--main_process_port", str(free_port())] if launcher else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    done = subprocess.run([sys.executable, *launch, *(entry or [RUN]), str(path), *overrides], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def finetune(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m finetune ARGS` (the `finetune` command) in a subprocess, output captured."""
    return subprocess.run([sys.executable, "-m", "finetune", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def first_logged_step(output_dir: Path) -> dict:
    state = json.loads(next(output_dir.glob("checkpoint-*/trainer_state.json")).read_text())
    return next(entry for entry in state["log_history"] if "loss" in entry)
