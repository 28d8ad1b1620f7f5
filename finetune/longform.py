"""Long-form evaluation with timestamp accuracy: a test set's clips, concatenated in order into files of a few
minutes with known boundaries, transcribed with Whisper's sequential long-form algorithm (finetune/transcription.py,
what `finetune transcribe` runs), scored for WER and for how far the predicted segment edges fall from the true clip
boundaries.

Boundary error: for every point where one clip ends and the next begins, the distance (s) to the nearest predicted
segment start or end; reported as median and 90th percentile. A model that lost its timestamps emits few, long
segments, so most boundaries are far from any edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from finetune.audio import decode_audio
from finetune.metrics import score
from finetune.packing import concatenate
from finetune.recipe import SAMPLE_RATE
from finetune.transcription import DecodeOptions, transcribe_batch


@dataclass
class LongFile:
    waveform: np.ndarray
    boundaries: list[float]  # s: where each clip after the first begins
    text: str  # the clips' references joined
    clips: int


def clip_waveform(row: dict[str, Any]) -> np.ndarray:
    """A prepared row's audio: its stored waveform, else decoded again from its file (rows that keep features)."""
    if "waveform" in row:
        return np.asarray(row["waveform"], dtype=np.float32)
    path = row.get("ref")
    if not path or not Path(path).is_file():
        raise ValueError(f"long-form scoring needs the clips' audio; row {path!r} keeps only features and no file")
    return decode_audio({"path": path})


def long_files(dataset: Any, target_s: float) -> list[LongFile]:
    """The set's rows in order, joined into files of about `target_s` (each file holds whole clips and ends at the
    first clip that reaches the target; the last file takes the rest)."""
    groups: list[list[tuple[np.ndarray, str]]] = [[]]
    length = 0
    for i in range(len(dataset)):
        if length >= target_s * SAMPLE_RATE:
            groups.append([])
            length = 0
        row = dataset[i]
        groups[-1].append((clip_waveform(row), str(row["text"])))
        length += len(groups[-1][-1][0])
    files = []
    for group in filter(None, groups):
        waveform, bounds = concatenate([w for w, _ in group], 0.0, limit_s=None)
        files.append(LongFile(waveform, [start for start, _ in bounds[1:]], " ".join(t for _, t in group), len(group)))
    return files


def boundary_errors(segments: list[dict[str, Any]], boundaries: list[float]) -> list[float]:
    """Seconds from each true boundary to the nearest predicted segment edge (inf when nothing was predicted)."""
    edges = np.array(sorted({float(s["start"]) for s in segments} | {float(s["end"]) for s in segments}))
    if edges.size == 0:
        return [float("inf")] * len(boundaries)
    return [float(np.min(np.abs(edges - b))) for b in boundaries]


def score_long_form(model: torch.nn.Module, processor: Any, dataset: Any, target_s: float, language: str,
                    normalize: Callable[[str], str]) -> dict[str, Any]:
    """WER and boundary error of one model on the set's long files (greedy, no fallback: deterministic)."""
    files = long_files(dataset, target_s)
    options = DecodeOptions.greedy(language)  # up to 224 tokens per 30-s window, as openai-whisper
    hypotheses, errors, segments = [], [], 0
    for file in files:
        result = transcribe_batch(model.eval(), processor, [file.waveform], options)[0]
        hypotheses.append(result["text"])
        errors += boundary_errors(result["segments"], file.boundaries)
        segments += len(result["segments"])
    rates = score([f.text for f in files], hypotheses, normalize)
    finite = np.array(errors, dtype=float)
    return {"files": len(files), "seconds": sum(len(f.waveform) for f in files) / SAMPLE_RATE,
            "clips": sum(f.clips for f in files), "segments": segments, "boundaries": len(errors),
            "wer": rates["wer"], "boundary_error_median_s": float(np.median(finite)) if errors else None,
            "boundary_error_p90_s": float(np.percentile(finite, 90)) if errors else None,
            "boundaries_within_0.5_s": float(np.mean(finite <= 0.5)) if errors else None}


LONG_FORM_NOTE = ("Each long-form set's clips joined in order into files of a few minutes, transcribed with the "
                  "sequential long-form algorithm (greedy). Boundary error: seconds from each true clip boundary to "
                  "the nearest predicted segment edge.")
LONG_FORM_HEADER = ["set", "model", "files", "audio s", "WER", "segments", "boundary error median s", "p90 s",
                    "within 0.5 s"]


def long_form_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row of cells (LONG_FORM_HEADER) per long-form set and model; empty when no set was scored long-form."""
    rows = []
    for name, entry in report["sets"].items():
        for model in ("zero_shot", "as_trained", "fine_tuned"):
            lf = entry.get(model, {}).get("long_form")
            if lf:
                rows.append([name, model, str(lf["files"]), f"{lf['seconds']:.0f}", f"{lf['wer']:.2f}",
                             str(lf["segments"]), f"{lf['boundary_error_median_s']:.2f}",
                             f"{lf['boundary_error_p90_s']:.2f}", f"{100 * lf['boundaries_within_0.5_s']:.0f} %"])
    return rows


def long_form_table(report: dict[str, Any]) -> str | None:
    """Markdown of long_form_rows, or None."""
    rows = long_form_rows(report)
    if not rows:
        return None
    lines = ["| " + " | ".join(LONG_FORM_HEADER) + " |", "|" + "---|" * len(LONG_FORM_HEADER)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
