"""Whisper-native training windows: short clips packed into one window of at most 30 s, labelled the way Whisper
was pre-trained (segment timestamps, previous-text prompts).

Whisper's encoder always reads 30 s; a 4-s clip alone is mostly padding. Packed, each epoch (seeded) shuffles the
training clips, groups those of one language into windows (at most `max_window_s` of audio and the decoder's 448
positions), concatenates their waveforms (`gap_s` of silence between) and labels the window

    <|startoftranscript|><|es|><|transcribe|><|0.00|> text one<|3.72|><|3.72|> text two<|7.10|><|endoftext|>

with timestamps from the real clip boundaries on Whisper's 0.02 s grid, or, with probability
1 - timestamp_probability, <|notimestamps|> and the texts joined. With probability prompt_probability the
sequence starts with <|startofprev|> and the previous window's text (same language, the epoch's order); the
decoder reads those positions but the loss skips them. `single` mode labels every clip alone the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from finetune.recipe import MAX_AUDIO_SECONDS, MAX_TARGET_POSITIONS, SAMPLE_RATE, RecipeError, WindowConfig

TIME_STEP = 0.02  # s: the resolution of Whisper's timestamp tokens <|0.00|> ... <|30.00|>
PROMPT_MAX_TOKENS = MAX_TARGET_POSITIONS // 2 - 1  # previous-text budget: openai-whisper's (223)


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens a window's label sequence is made of."""

    start: int  # <|startoftranscript|>
    language: dict[str, int]  # code -> <|code|>
    task: int  # <|transcribe|> or <|translate|>
    no_timestamps: int
    end: int  # <|endoftext|>
    previous: int  # <|startofprev|>
    time_zero: int  # <|0.00|>; <|t|> = time_zero + round(t / TIME_STEP)

    @classmethod
    def of(cls, tokenizer: Any, languages: list[str], task: str) -> SpecialTokens:
        ids = tokenizer.convert_tokens_to_ids
        return cls(start=ids("<|startoftranscript|>"), language={code: ids(f"<|{code}|>") for code in languages},
                   task=ids(f"<|{task}|>"), no_timestamps=ids("<|notimestamps|>"), end=tokenizer.eos_token_id,
                   previous=ids("<|startofprev|>"), time_zero=ids("<|0.00|>"))

    def time(self, seconds: float) -> int:
        steps = round(min(max(seconds, 0.0), MAX_AUDIO_SECONDS) / TIME_STEP)
        return self.time_zero + steps


def plan_windows(durations: list[float], token_counts: list[int], languages: list[str], *, seed: int, epoch: int,
                 max_window_s: float, gap_s: float, max_tokens: int = MAX_TARGET_POSITIONS,
                 stretch: float = 1.0) -> list[list[int]]:
    """Row indices grouped into windows: the rows in a seeded order for this epoch, each appended to the open window
    of its language while the window's audio (durations x `stretch`, the longest augmentation can make them, plus
    gaps) stays within `max_window_s` and its labels (`token_counts` = text tokens with their two timestamps,
    plus the 4 fixed tokens) within `max_tokens`; otherwise that window closes and a new one opens. A clip longer than
    a window forms its own. Windows come in the order they closed, then the open ones by language."""
    order = np.random.default_rng([seed, epoch]).permutation(len(durations))
    fixed = 4  # <|startoftranscript|><|lang|><|task|> ... <|endoftext|>
    open_windows: dict[str, tuple[list[int], float, int]] = {}
    windows: list[list[int]] = []
    for index in order.tolist():
        seconds, tokens, language = durations[index] * stretch, token_counts[index], languages[index]
        rows, used_s, used_tokens = open_windows.get(language, ([], 0.0, fixed))
        if rows and (used_s + gap_s + seconds > max_window_s or used_tokens + tokens > max_tokens):
            windows.append(rows)
            rows, used_s, used_tokens = [], 0.0, fixed
        open_windows[language] = (rows + [index], used_s + (gap_s if rows else 0.0) + seconds, used_tokens + tokens)
    windows.extend(rows for _, (rows, _, _) in sorted(open_windows.items()))
    return windows


def previous_windows(windows: list[list[int]], languages: list[str]) -> list[int | None]:
    """For each window, the window before it of the same language (its prompt text), or None."""
    last: dict[str, int] = {}
    previous: list[int | None] = []
    for number, rows in enumerate(windows):
        language = languages[rows[0]]
        previous.append(last.get(language))
        last[language] = number
    return previous


def window_labels(segments: list[list[int]], bounds: list[tuple[float, float]], language: str,
                  special: SpecialTokens, *, timestamps: bool, prompt: list[int] | None = None,
                  join: Callable[[], list[int]] | None = None,
                  max_tokens: int = MAX_TARGET_POSITIONS) -> tuple[list[int], int]:
    """The full token sequence of one window and how many of its first tokens are the prompt.

    segments: each clip's text tokens (with a leading space, as Whisper writes a segment); bounds: each clip's
    (start, end) in the window, seconds; join: tokenizes the texts joined into one, called only for a window
    labelled without timestamps (default: the segments' tokens one after another). With
    `prompt`, the sequence starts <|startofprev|> + its last tokens that fit (at most 223); the decoder reads at
    most `max_tokens` positions (the sequence less its last token).
    """
    body = [special.start, special.language[language], special.task]
    if timestamps:
        for tokens, (start, end) in zip(segments, bounds):
            body += [special.time(start), *tokens, special.time(end)]
    if not timestamps or len(body) > max_tokens:  # decoder positions with <|endoftext|> to come; else no timestamps
        body = body[:3] + [special.no_timestamps, *(join() if join is not None else
                                                    [t for s in segments for t in s])]
    body.append(special.end)
    if not prompt:
        return body, 0
    room = min(PROMPT_MAX_TOKENS, max_tokens - len(body))  # the decoder reads all but the last token
    kept = prompt[-room:] if room > 0 else []
    if not kept:
        return body, 0
    return [special.previous, *kept, *body], 1 + len(kept)


class TrainingWindows(torch.utils.data.Dataset):
    """Prepared training rows (`waveform`, `duration`, `text`, `language`) -> one window per item:
    `waveform` (the clips concatenated), `labels` (the full sequence), `prompt_length`, `language`, `duration`
    (seconds of speech in it) and `clips`. The plan is redrawn by `set_epoch` (the Trainer calls it each epoch);
    the probability draws depend on (seed, epoch, window), so every rank and DataLoader worker agrees."""

    def __init__(self, rows: Any, tokenizer: Any, cfg: WindowConfig, task: str, seed: int,
                 stretch: float = 1.0) -> None:
        # Waveforms as numpy arrays straight from Arrow (not Python lists of floats), unless a transform
        # (waveform augmentation) reads them first.
        plain = rows.format["type"] is None
        self.rows = rows.with_format("numpy", columns=["waveform"], output_all_columns=True) if plain else rows
        self.tokenizer, self.cfg, self.seed, self.stretch = tokenizer, cfg, seed, stretch
        self.durations = [float(d) for d in rows["duration"]]
        self.languages = list(rows["language"])
        self.texts = list(rows["text"])
        self.segments = tokenizer([" " + text for text in self.texts], add_special_tokens=False).input_ids
        self.special = SpecialTokens.of(tokenizer, sorted(set(self.languages)), task)
        if cfg.timestamp_probability > 0 and self.special.time_zero in (None, tokenizer.unk_token_id):
            raise RecipeError("data.windows", ["the model's tokenizer has no timestamp tokens (<|0.00|>): set "
                                               "data.windows.timestamp_probability=0, or mode: none"])
        self.epoch = -1
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        self.epoch = epoch
        if self.cfg.mode == "packed":
            self.windows = plan_windows(self.durations, [len(s) + 2 for s in self.segments], self.languages,
                                        seed=self.seed, epoch=epoch, max_window_s=self.cfg.max_window_s,
                                        gap_s=self.cfg.gap_s, stretch=self.stretch)
        else:  # single: every clip its own window, in row order (the Trainer's sampler shuffles)
            self.windows = [[i] for i in range(len(self.durations))]
        self.previous = previous_windows(self.windows, self.languages)

    def __len__(self) -> int:
        return len(self.windows)

    def speech_seconds(self) -> float:
        """Seconds of speech per window on average, this epoch (padding excluded)."""
        return sum(self.durations) / max(1, len(self.windows))

    def draws(self, number: int) -> tuple[bool, bool]:
        """(timestamps?, prompt?) for window `number` of this epoch."""
        u = np.random.default_rng([self.seed, self.epoch, number]).random(2)
        return bool(u[0] < self.cfg.timestamp_probability), bool(u[1] < self.cfg.prompt_probability)

    def __getitem__(self, number: int) -> dict[str, Any]:
        indices = self.windows[number]
        waveforms = [np.asarray(w, dtype=np.float32) for w in self.rows[indices]["waveform"]]
        waveform, bounds = concatenate(waveforms, self.cfg.gap_s)
        timestamps, prompted = self.draws(number)
        language = self.languages[indices[0]]

        def join() -> list[int]:  # a fresh tokenization of the whole text, as a transcript without timestamps reads
            return self.tokenizer(" ".join(self.texts[i] for i in indices), add_special_tokens=False).input_ids

        prompt = None
        if prompted and self.previous[number] is not None:
            prompt = [t for i in self.windows[self.previous[number]] for t in self.segments[i]]
        labels, prompt_length = window_labels([self.segments[i] for i in indices], bounds, language, self.special,
                                              timestamps=timestamps, prompt=prompt, join=join)
        return {"waveform": waveform, "labels": labels, "prompt_length": prompt_length, "language": language,
                "duration": sum(self.durations[i] for i in indices), "clips": len(indices)}


def concatenate(waveforms: list[np.ndarray], gap_s: float,
                limit_s: float | None = MAX_AUDIO_SECONDS) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips one after another with `gap_s` of silence between; each clip's (start, end) in seconds. Cut at
    `limit_s` (a training window: 30 s, which only augmentation beyond the plan's allowance can reach; None: never,
    for long-form files)."""
    gap = np.zeros(int(round(gap_s * SAMPLE_RATE)), np.float32)
    parts, bounds, at = [], [], 0
    for i, waveform in enumerate(waveforms):
        if i:
            parts.append(gap)
            at += len(gap)
        bounds.append((at / SAMPLE_RATE, (at + len(waveform)) / SAMPLE_RATE))
        parts.append(waveform)
        at += len(waveform)
    if limit_s is None:
        return np.concatenate(parts), bounds
    bounds = [(min(s, limit_s), min(e, limit_s)) for s, e in bounds]
    return np.concatenate(parts)[:int(limit_s * SAMPLE_RATE)], bounds


def longest_stretch(speed_prob: float, speed_range: tuple[float, float]) -> float:
    """How much longer speed perturbation can make a clip (factor < 1 slows it down), for the window plan."""
    return 1.0 / min(speed_range) if speed_prob > 0 and min(speed_range) < 1 else 1.0

