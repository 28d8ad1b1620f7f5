"""Transcript files in the whisper CLI's formats and layouts: txt, vtt, srt, tsv, json (`<stem>.<ext>`).

A result is openai-whisper's dict: {"text", "segments": [{"start", "end", "text", ...}], "language"}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from finetune.outputs import write_text

Result = dict[str, Any]


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """[HH:]MM:SS.mmm, rounded to the millisecond; hours shown when asked or when non-zero."""
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    ms = round(seconds * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    hours_part = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


@dataclass(frozen=True)
class SubtitleLayout:
    """The whisper CLI's subtitle options, for results with word timestamps. max_line_width: characters per line
    (a line breaks before the word that would pass it); max_line_count: lines per cue. Unless both are given, every
    segment starts a new cue (the segments are kept)."""

    max_line_width: int | None = None
    max_line_count: int | None = None


LONG_PAUSE_S = 3.0  # re-flowed cues also break where the speech pauses longer than this


def subtitle_cues(result: Result, layout: SubtitleLayout) -> list[tuple[float, float, str]]:
    """(start, end, text) per cue. Without words: one cue per segment. With words, as the whisper CLI lays them
    out: cues from the first word's start to the last word's end, lines broken by width, cues by line count, pause or
    segment."""
    segments = result["segments"]
    if not segments or "words" not in segments[0]:
        return [(s["start"], s["end"], s["text"].strip().replace("-->", "->")) for s in segments]
    keep_segments = layout.max_line_width is None or layout.max_line_count is None
    width = layout.max_line_width or 1000
    cues: list[list[dict[str, Any]]] = []
    cue: list[dict[str, Any]] = []
    line_len, lines = 0, 1
    last = next((w["start"] for s in segments for w in s["words"]), segments[0]["start"])
    for segment in segments:
        for position, word in enumerate(segment["words"]):
            word = dict(word)
            pause = not keep_segments and word["start"] - last > LONG_PAUSE_S
            segment_break = keep_segments and position == 0 and bool(cue)
            if line_len > 0 and line_len + len(word["word"]) <= width and not pause and not segment_break:
                line_len += len(word["word"])  # same line
            else:
                word["word"] = word["word"].strip()
                full = layout.max_line_count is not None and (pause or lines >= layout.max_line_count)
                if segment_break or (cue and full):
                    cues.append(cue)
                    cue, lines = [], 1
                elif line_len > 0:
                    lines += 1
                    word["word"] = "\n" + word["word"]
                line_len = len(word["word"].strip())
            cue.append(word)
            last = word["start"]
    if cue:
        cues.append(cue)
    return [(c[0]["start"], c[-1]["end"], "".join(w["word"] for w in c)) for c in cues]


def _cues(result: Result, always_include_hours: bool, decimal_marker: str,
          layout: SubtitleLayout) -> list[tuple[str, str, str]]:
    """Cues with formatted times ("-->" in a segment's text would end a cue early: it becomes "->")."""
    return [(format_timestamp(start, always_include_hours, decimal_marker),
             format_timestamp(end, always_include_hours, decimal_marker), text)
            for start, end, text in subtitle_cues(result, layout)]


def to_txt(result: Result, layout: SubtitleLayout = SubtitleLayout()) -> str:
    return "".join(f"{s['text'].strip()}\n" for s in result["segments"])


def to_vtt(result: Result, layout: SubtitleLayout = SubtitleLayout()) -> str:
    return "WEBVTT\n\n" + "".join(f"{a} --> {b}\n{text}\n\n" for a, b, text in _cues(result, False, ".", layout))


def to_srt(result: Result, layout: SubtitleLayout = SubtitleLayout()) -> str:
    cues = _cues(result, True, ",", layout)
    return "".join(f"{i}\n{a} --> {b}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, 1))


def to_tsv(result: Result, layout: SubtitleLayout = SubtitleLayout()) -> str:
    """Integer milliseconds: no locale can turn the decimal point into a comma."""
    rows = [f"{round(1000 * s['start'])}\t{round(1000 * s['end'])}\t{s['text'].strip().replace(chr(9), ' ')}\n"
            for s in result["segments"]]
    return "start\tend\ttext\n" + "".join(rows)


def to_json(result: Result, layout: SubtitleLayout = SubtitleLayout()) -> str:
    return json.dumps(result)  # ASCII-escaped, as openai-whisper writes it


WRITERS: dict[str, Callable[[Result, SubtitleLayout], str]] = {
    "txt": to_txt, "vtt": to_vtt, "srt": to_srt, "tsv": to_tsv, "json": to_json}
FORMATS = [*WRITERS, "all"]


def write_result(result: Result, audio_path: str | Path, output_dir: str | Path, output_format: str,
                 layout: SubtitleLayout = SubtitleLayout()) -> list[Path]:
    """`<output_dir>/<audio stem>.<ext>` for one format or all of them; each file written atomically."""
    formats = list(WRITERS) if output_format == "all" else [output_format]
    stem = Path(audio_path).stem
    written = []
    for fmt in formats:
        path = Path(output_dir) / f"{stem}.{fmt}"
        write_text(path, WRITERS[fmt](result, layout))
        written.append(path)
    return written
