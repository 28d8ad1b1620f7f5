"""What the data kept and dropped, per source: the counts, the table, dropped_rows.jsonl, test-set losses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.outputs import log, write_text
from finetune.recipe import RecipeError


@dataclass
class SourceCount:
    """What one source contributed: rows read, rows kept, rows dropped per reason, audio hours kept."""

    split: str
    source: str
    rows: int = 0
    kept: int = 0
    hours: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    streamed: bool = False  # read lazily while training: not counted in advance


def test_loss_lines(counts: list[SourceCount]) -> list[str]:
    """One line per test set that lost rows: how many, why, and that its scores cover only the rest."""
    return [f"Test set {c.source!r} lost {c.rows - c.kept} of {c.rows} rows ({100 * (c.rows - c.kept) / c.rows:.0f} "
            f"%: {', '.join(f'{why}: {n}' for why, n in c.dropped.items())}); its scores cover the {c.kept} kept"
            for c in counts if lost_share(c) > 0]


def lost_share(count: SourceCount) -> float:
    """The share of a test set's rows that were dropped (0 for other splits and streamed sources)."""
    return (count.rows - count.kept) / count.rows if count.split == "test" and count.rows else 0.0


def check_test_losses(counts: list[SourceCount], max_share: float) -> None:
    """Warn about every test set that lost rows; stop when one lost more than `max_share` of them."""
    for line in test_loss_lines(counts):
        log.warning(line)
    over = [c for c in counts if lost_share(c) > max_share]
    if over:
        raise RecipeError("data", [f"test set {c.source!r} lost {c.rows - c.kept} of {c.rows} rows, more than "
                                   f"data.max_test_dropped={max_share:g} allows: {lost_rows(c)}. Fix those files, or "
                                   f"allow it with data.max_test_dropped=1" for c in over])


def lost_rows(count: SourceCount, most: int = 5) -> str:
    """'a.wav (missing audio file), ...': the first dropped rows of a source, by audio path and reason."""
    shown = [f"{Path(str(r['audio'])).name} ({r['reason']})" for r in count.dropped_rows[:most]]
    more = len(count.dropped_rows) - most
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def save_data_report(output_dir: str, counts: list[SourceCount]) -> Path:
    """<output_dir>/dropped_rows.jsonl: every dropped row with its split, source, audio and reason."""
    lines = [json.dumps(row, ensure_ascii=False) for c in counts for row in c.dropped_rows]
    path = Path(output_dir) / "dropped_rows.jsonl"
    write_text(path, "".join(line + "\n" for line in lines))
    return path


def counts_table(counts: list[SourceCount]) -> str:
    """A Markdown table: one line per split and source, kept and dropped rows with reasons."""
    lines = ["| split | source | rows | kept | hours kept | dropped (reason: rows) |", "|---|---|---|---|---|---|"]
    for c in counts:
        if c.streamed:
            lines.append(f"| {c.split} | {c.source} | streamed | - | - | not counted (streamed) |")
            continue
        dropped = ", ".join(f"{r}: {n}" for r, n in c.dropped.items()) or "none"
        lines.append(f"| {c.split} | {c.source} | {c.rows} | {c.kept} | {c.hours:.3f} | {dropped} |")
    return "\n".join(lines)

