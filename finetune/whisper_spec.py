"""What Whisper itself fixes: decoder positions, the 30-s window, the sample rate and the language codes."""

from __future__ import annotations

import difflib

# Whisper's decoder has 448 positions; the prompt <|sot|><|lang|><|task|><|notimestamps|> takes 4 of them.
MAX_TARGET_POSITIONS = 448
PROMPT_TOKENS = 4
MAX_AUDIO_SECONDS = 30.0  # Whisper's encoder sees at most 30 s (3000 mel frames)
SAMPLE_RATE = 16_000  # Hz: what Whisper's feature extractor expects


def whisper_languages() -> dict[str, str]:
    """Whisper's language codes -> names ("es" -> "spanish"), from transformers' own table."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return dict(LANGUAGES)


def language_code(value: str) -> str:
    """Accept "es", "ES" or "spanish"; return the code, or raise with the valid choices."""
    languages = whisper_languages()
    value = value.strip().lower()
    if value in languages:
        return value
    by_name = {name: code for code, name in languages.items()}
    if value in by_name:
        return by_name[value]
    close = difflib.get_close_matches(value, list(languages) + list(by_name), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown Whisper language {value!r}.{hint} Valid codes: {', '.join(sorted(languages))}")
