"""Runs that survive kills, reruns and mistakes, run as a user meets them (subprocesses, tiny model).

kill -9 lands at a random point of each phase (the n-th call of a function there, n drawn from the seed): in a
training step, in each part of a checkpoint save, while writing the adapter or the merged model, after the merge,
between report files. A rerun with train.resume=auto must then finish with every output complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe
from tiny import bad_input_corpus

from finetune.checkpoints import MARK_FILE

ROOT = Path(__file__).resolve().parents[1]
FAULT_RUN = str(ROOT / "tests" / "fault_run.py")
STEPS = 4
# Kill points, and how many calls of each a 4-step run makes (checkpoints every step).
POINTS = {"train": STEPS, "save-weights": 3 * STEPS, "save-state": STEPS, "save-mark": STEPS, "adapter": STEPS + 2,
          "merge": 2, "report": 3}
LEFTOVER = re.compile(r"\.(tmp|old|deleting)-\d+$")

pytestmark = pytest.mark.slow


def fault_recipe(model: Path, corpus: Path, out: Path, **train) -> dict:
    return tiny_recipe(model, corpus, out, train={"max_steps": STEPS, "eval_steps": 1, "save_total_limit": 2,
                                                  "logging_steps": 1, **train})


def start(recipe: dict, tmp_path: Path, *args: str, fault: str | None = None) -> subprocess.Popen:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "FAULT": fault or ""}
    # Ctrl-C's default action in the child even when pytest itself runs as a background job, whose SIGINT the shell
    # ignores (an ignored SIGINT is inherited, and Python then installs no KeyboardInterrupt handler).
    return subprocess.Popen([sys.executable, FAULT_RUN, str(path), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=600)
    return process.returncode, err


def run(recipe: dict, tmp_path: Path, *args: str, fault: str | None = None) -> tuple[int, str]:
    return finish(start(recipe, tmp_path, *args, fault=fault))


def assert_complete(out: Path) -> dict:
    """Every output of a finished run, complete; nothing half-written left; the lock free."""
    for name in ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "merged/model.safetensors",
                 "report.json", "report.md", "report.html", "predictions.jsonl", "recipe.yaml"]:
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if LEFTOVER.search(p.name)]
    checkpoints = list(out.glob("checkpoint-*"))
    assert checkpoints and all((c / MARK_FILE).is_file() and (c / "trainer_state.json").is_file()
                               for c in checkpoints)
    assert (out / ".finetune.lock").read_text() == ""
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["global_step"] == STEPS
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4  # the tiny test set: 4 clips
    return report


@pytest.mark.parametrize("seed", range(len(POINTS)))
def test_kill_9_anywhere_then_resume_auto_finishes(seed: int, tmp_path: Path, tiny_model_dir: Path,
                                                  corpus_dir: Path) -> None:
    point = list(POINTS)[seed]
    n = random.Random(seed).randint(1, POINTS[point])
    out = tmp_path / "run"
    code, err = run(fault_recipe(tiny_model_dir, corpus_dir, out), tmp_path, fault=f"{point}:{n}")
    assert code == -9 and f"FAULT: kill -9 at {point} call {n}" in err, err[-3000:]
    code, err = run(fault_recipe(tiny_model_dir, corpus_dir, out, resume="auto"), tmp_path)
    assert code == 0, err[-5000:]
    assert "Traceback" not in err
    report = assert_complete(out)
    if "Resuming from" in err:  # the whole run's metrics, not the last session's
        assert report["training"]["sessions"] == 2 and report["training"]["train_loss"] > 0


def test_two_runs_into_one_directory_one_trains_the_other_exits_2(tmp_path: Path, tiny_model_dir: Path,
                                                                   corpus_dir: Path) -> None:
    out = tmp_path / "run"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start(fault_recipe(tiny_model_dir, corpus_dir, out), tmp_path / "a")
    second = start(fault_recipe(tiny_model_dir, corpus_dir, out), tmp_path / "b")
    results = sorted([finish(first), finish(second)])
    assert [code for code, _ in results] == [0, 2], results[1][1][-3000:]
    assert "is in use by another run (pid " in results[1][1]
    assert_complete(out)


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


def test_reruns_into_a_finished_directory(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    out = tmp_path / "run"
    assert run(fault_recipe(tiny_model_dir, corpus_dir, out), tmp_path)[0] == 0
    before = snapshot(out)
    # --check validates and writes nothing, not even with another learning rate.
    check = subprocess.run([sys.executable, FAULT_RUN, str(tmp_path / "recipe.yaml"), "--check",
                            "train.learning_rate=0.5"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "| split | source |" in check.stdout
    assert snapshot(out) == before
    # Another recipe into the same directory: refused with the choices, with or without resume.
    for resume in ("false", "auto"):
        code, err = run(fault_recipe(tiny_model_dir, corpus_dir, out, learning_rate=0.05, resume=resume), tmp_path)
        assert code == 2 and "already holds a run of another recipe (it differs in train.learning_rate 0.01 -> " \
                              "0.05)" in err and "--overwrite" in err, err[-3000:]
        assert "Traceback" not in err
    assert snapshot(out) == before
    # --overwrite starts afresh.
    code, err = run(fault_recipe(tiny_model_dir, corpus_dir, out, learning_rate=0.05), tmp_path, "--overwrite")
    assert code == 0, err[-3000:]
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["learning_rate"] == 0.05
    assert_complete(out)


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    out = tmp_path / "run"
    process = start(fault_recipe(tiny_model_dir, corpus_dir, out, max_steps=200, eval_steps=2), tmp_path)
    deadline = time.time() + 300
    while not list(out.glob(f"checkpoint-*/{MARK_FILE}")) and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(2)  # SIGINT, as Ctrl-C sends
    code, err = finish(process)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err
    assert re.search(r"error: interrupted at step \d+; the last complete checkpoint is .*checkpoint-\d+; rerun "
                     r"with train.resume=auto to continue", err), err[-2000:]


def test_bad_output_dir_and_a_test_set_that_lost_rows_stop_before_training(tmp_path: Path, tiny_model_dir: Path,
                                                                           corpus_dir: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, err = run(fault_recipe(tiny_model_dir, corpus_dir, tmp_path / "file" / "run"), tmp_path)
    assert code == 2 and "is a file, not a directory" in err and "Traceback" not in err
    bad = bad_input_corpus(tmp_path / "bad")
    recipe = fault_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")
    recipe["data"]["test"] = [{"manifest": str(bad), "audio_column": "path", "text_column": "sentence",
                               "language_column": "lang", "name": "bad test"}]
    code, err = run(recipe, tmp_path)
    assert code == 2 and "test set 'bad test' lost" in err and "data.max_test_dropped=1" in err, err[-3000:]
    assert not list((tmp_path / "run").glob("checkpoint-*"))
