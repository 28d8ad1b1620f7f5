"""Atomic writes: a failed write leaves the previous output whole, a finished one replaces it in one rename."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.outputs import atomic_dir, write_json


def test_atomic_dir_replaces_on_success(tmp_path: Path) -> None:
    final = tmp_path / "merged"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(final) as tmp:
        assert tmp != final and not (tmp / "old.txt").exists()
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").exists()  # readers still see the old one while writing
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_atomic_dir_keeps_the_old_output_when_writing_fails(tmp_path: Path) -> None:
    final = tmp_path / "merged"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_write_json_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_json(tmp_path / "results.json", {"wer": 1.5, "set": "es ñ"})
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8")) == {"wer": 1.5, "set": "es ñ"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
