"""Transcript files in the whisper CLI's formats and layouts: txt, vtt, srt, tsv, json (`<stem>.<ext>`).

A result is openai-whisper's dict: {"text", "segments": [{"start", "end", "text", ...}], "language"}.
"""

from __future__ import annotations

import json
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


def _cues(result: Result, always_include_hours: bool, decimal_marker: str) -> list[tuple[str, str, str]]:
    """(start, end, text) per segment; "-->" in the text would end a cue early, so it becomes "->"."""
    return [(format_timestamp(s["start"], always_include_hours, decimal_marker),
             format_timestamp(s["end"], always_include_hours, decimal_marker),
             s["text"].strip().replace("-->", "->")) for s in result["segments"]]


def to_txt(result: Result) -> str:
    return "".join(f"{s['text'].strip()}\n" for s in result["segments"])


def to_vtt(result: Result) -> str:
    return "WEBVTT\n\n" + "".join(f"{a} --> {b}\n{text}\n\n" for a, b, text in _cues(result, False, "."))


def to_srt(result: Result) -> str:
    return "".join(f"{i}\n{a} --> {b}\n{text}\n\n" for i, (a, b, text) in enumerate(_cues(result, True, ","), 1))


def to_tsv(result: Result) -> str:
    """Integer milliseconds: no locale can turn the decimal point into a comma."""
    rows = [f"{round(1000 * s['start'])}\t{round(1000 * s['end'])}\t{s['text'].strip().replace(chr(9), ' ')}\n"
            for s in result["segments"]]
    return "start\tend\ttext\n" + "".join(rows)


def to_json(result: Result) -> str:
    return json.dumps(result)  # ASCII-escaped, as openai-whisper writes it


WRITERS: dict[str, Callable[[Result], str]] = {"txt": to_txt, "vtt": to_vtt, "srt": to_srt, "tsv": to_tsv,
                                                "json": to_json}
FORMATS = [*WRITERS, "all"]


def write_result(result: Result, audio_path: str | Path, output_dir: str | Path, output_format: str) -> list[Path]:
    """`<output_dir>/<audio stem>.<ext>` for one format or all of them; each file written atomically."""
    formats = list(WRITERS) if output_format == "all" else [output_format]
    stem = Path(audio_path).stem
    written = []
    for fmt in formats:
        path = Path(output_dir) / f"{stem}.{fmt}"
        write_text(path, WRITERS[fmt](result))
        written.append(path)
    return written
