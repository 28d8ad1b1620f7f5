"""The `finetune` command: every subcommand's help, one way in for each entry point, trackers checked up front."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

from finetune.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_has_help_with_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_status:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_status.value.code == 0
    assert out.startswith(f"usage: finetune {command}") and "examples:" in out and f"finetune {command}" in out


def test_top_level_help_lists_the_subcommands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_status:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_status.value.code == 0 and all(name in out for name in COMMANDS)
    with pytest.raises(SystemExit) as exit_status:
        main(["trian", "recipe.yaml"])
    assert exit_status.value.code == 2 and "invalid choice: 'trian'" in capsys.readouterr().err


def test_console_script_and_module_are_installed() -> None:
    """What the README's install gives: the `finetune` console script, and `python -m finetune`."""
    script = shutil.which("finetune", path=str(Path(sys.executable).parent))
    assert script, "the finetune console script is not installed next to this Python: pip install -e ."
    for command in ([script, "--help"], [sys.executable, "-m", "finetune", "--version"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "finetune" in done.stdout, done.stderr


def test_check_stops_on_a_tracker_that_is_not_installed(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path,
                                                        capsys, monkeypatch) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")))
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    assert main(["check", str(recipe), "train.report_to=[tensorboard, no_such_tracker]"]) == 2
    assert "unknown tracker(s) ['no_such_tracker']" in capsys.readouterr().err
    monkeypatch.setattr("finetune.tracking.PACKAGES", {"tensorboard": ("tensorboard", "not_a_module_here")})
    assert main(["check", str(recipe), "train.report_to=tensorboard"]) == 2
    assert "not installed: tensorboard (pip install tensorboard)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # --check writes nothing
