"""The output directory's rules without training: identity, complete checkpoints, leftovers, the lock, path checks.

The same rules under real kills and concurrent runs: tests/test_faults.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe

from finetune import run_dir
from finetune.lock import LockBusy, OutputLock
from finetune.recipe import RecipeError, Recipe
from finetune.checkpoints import MARK_FILE, clean_leftovers, complete_checkpoints, rotate
from finetune.run_dir import Claim, OutputDirError, check_output_path, differences, fingerprint, training_identity
from finetune.train import whole_run_metrics


def make_recipe(tmp_path: Path, output_dir: str | None = None, **sections) -> Recipe:
    out = Path(output_dir) if output_dir else tmp_path / "out"
    return Recipe.model_validate(tiny_recipe(tmp_path / "model", tmp_path / "corpus", out, **sections))


def checkpoint(out: Path, step: int, recipe: Recipe | None = None, complete: bool = True) -> Path:
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"x")
    if complete:
        identity = training_identity(recipe)
        claim = Claim(str(out), None, identity, fingerprint(identity))
        (path / MARK_FILE).write_text(json.dumps(claim.mark(step)))
    return path


def test_identity_ignores_where_outputs_go_but_not_what_is_trained(tmp_path: Path) -> None:
    base = training_identity(make_recipe(tmp_path))
    moved = training_identity(make_recipe(tmp_path, output_dir=str(tmp_path / "elsewhere"),
                                          train={"resume": "auto", "save_total_limit": 5},
                                          eval={"batch_size": 2, "bootstrap_samples": 200},
                                          output={"merge": False}, hub={"private": False}))
    assert moved == base
    faster = training_identity(make_recipe(tmp_path, train={"learning_rate": 0.05}))
    assert fingerprint(faster) != fingerprint(base)
    assert differences(base, faster) == "train.learning_rate 0.01 -> 0.05"
    other_data = training_identity(make_recipe(tmp_path, data={"max_duration_s": 10.0}))
    assert "data.max_duration_s 30.0 -> 10.0" in differences(base, other_data)


def test_only_marked_checkpoints_count_and_leftovers_are_cleaned(tmp_path: Path) -> None:
    recipe, out = make_recipe(tmp_path), tmp_path / "out"
    checkpoint(out, 2, recipe)
    checkpoint(out, 4, complete=False)  # killed during its save
    (out / ".adapter.tmp-123").mkdir()  # killed while writing the adapter
    (out / ".merged.old-77").mkdir()  # killed between the two renames of a replacement: merged/ itself is gone
    (out / ".merged.old-77" / "model.safetensors").write_bytes(b"m")
    (out / ".report.md.tmp-5").write_text("half")
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2"]
    clean_leftovers(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "merged"]
    assert (out / "merged" / "model.safetensors").read_bytes() == b"m"


def test_rotation_keeps_the_newest_and_the_best_complete_checkpoints(tmp_path: Path) -> None:
    recipe, out = make_recipe(tmp_path), tmp_path / "out"
    for step in (1, 2, 3, 4):
        checkpoint(out, step, recipe)
    rotate(out, 2, str(out / "checkpoint-1"))
    assert [p.name for p in out.iterdir()] and sorted(p.name for p in out.iterdir()) == ["checkpoint-1",
                                                                                        "checkpoint-4"]


def claim(recipe: Recipe, overwrite: bool = False) -> Claim:
    """Claim and let go at once (a run holds the lock until it exits)."""
    decided = run_dir.claim_output_dir(recipe, overwrite)
    decided.release()
    return decided


def test_resume_auto_continues_the_same_recipe_and_refuses_another(tmp_path: Path) -> None:
    recipe, out = make_recipe(tmp_path, train={"resume": "auto"}), tmp_path / "out"
    checkpoint(out, 2, recipe)
    checkpoint(out, 4, recipe)
    decided = claim(recipe)
    assert decided.resume == str(out / "checkpoint-4") and decided.prior_sessions == 1
    other = make_recipe(tmp_path, train={"resume": "auto", "learning_rate": 0.05})
    with pytest.raises(OutputDirError, match=r"another recipe \(it differs in train.learning_rate 0.01 -> 0.05\).*"
                                             r"--overwrite"):
        claim(other)
    assert (out / "checkpoint-4").is_dir()  # refusing changed nothing


def test_a_new_run_refuses_a_directory_holding_a_run_unless_overwrite(tmp_path: Path) -> None:
    recipe, out = make_recipe(tmp_path), tmp_path / "out"
    checkpoint(out, 2, recipe)
    (out / "adapter").mkdir()
    (out / "report.json").write_text("{}")
    (out / "notes.txt").write_text("mine")  # not an output: --overwrite leaves it
    with pytest.raises(OutputDirError, match=r"holds a run of this same recipe: checkpoint-2, adapter, report.json."
                                             r" Choose: train.resume=auto to continue it; or output_dir="):
        claim(recipe)
    assert claim(recipe, overwrite=True).resume is None
    assert sorted(p.name for p in out.iterdir()) == [".finetune.lock", "notes.txt"]


def test_an_explicit_checkpoint_must_be_complete(tmp_path: Path) -> None:
    out = tmp_path / "out"
    half = checkpoint(out, 3, complete=False)
    with pytest.raises(OutputDirError, match="not a complete checkpoint"):
        claim(make_recipe(tmp_path, train={"resume": str(half)}))


def test_a_second_holder_is_refused_and_a_dead_holder_is_taken_over(tmp_path: Path, caplog) -> None:
    first = OutputLock(tmp_path)
    first.acquire()
    with pytest.raises(LockBusy, match=rf"in use by another run \(pid {os.getpid()} on host "):
        OutputLock(tmp_path).acquire()
    first.release()
    # A run killed with -9 leaves its record; the kernel has dropped its flock.
    killed = subprocess.run([sys.executable, "-c", "import os, signal, sys; sys.path.insert(0, sys.argv[2]);"
                             "from finetune.lock import OutputLock; OutputLock(sys.argv[1]).acquire();"
                             "os.kill(os.getpid(), signal.SIGKILL)", str(tmp_path), str(Path.cwd())],
                            cwd=Path(__file__).resolve().parents[1])
    assert killed.returncode == -9
    assert json.loads((tmp_path / ".finetune.lock").read_text())["pid"] != os.getpid()  # the dead run's record
    again = OutputLock(tmp_path)
    with caplog.at_level("WARNING", logger="finetune"):
        again.acquire()
    assert "from a run that did not finish" in caplog.text
    again.release()
    assert (tmp_path / ".finetune.lock").read_text() == ""


def test_output_path_problems_are_one_message_before_any_work(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecipeError, match=r"output_dir: 1 problem\n  - output_dir '.*file/run': '.*file' is a file"):
        check_output_path(make_recipe(tmp_path, output_dir=str(tmp_path / "file" / "run")))
    monkeypatch.setattr(run_dir.shutil, "disk_usage", lambda path: type("U", (), {"free": 10 * 2**20})())
    with pytest.raises(RecipeError, match=r"10 MB free on its disk, this run needs at least ~200 MB"):
        check_output_path(make_recipe(tmp_path, output_dir=str(tmp_path / "new" / "run")))
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere, so a read-only directory cannot be tested")
def test_an_unwritable_output_dir_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(RecipeError, match="no permission to write in"):
        check_output_path(make_recipe(tmp_path, output_dir=str(locked / "run")))


def test_a_resumed_runs_metrics_cover_every_session(tmp_path: Path) -> None:
    history = [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval_wer": 50.0},
               {"step": 4, "loss": 1.0}]  # the last entry logged after 2 more steps
    claim = Claim("out", "out/checkpoint-2", {}, "f", prior_seconds=30.0, prior_sessions=1)
    metrics = whole_run_metrics(history, 4, claim, {"train_runtime": 10.0, "train_loss": 0.0})
    assert metrics["train_loss"] == pytest.approx((4.0 + 2.0 + 2 * 1.0) / 4)
    assert metrics["train_runtime"] == 40.0 and metrics["sessions"] == 2
    assert metrics["train_steps_per_second"] == pytest.approx(0.1)
