"""The collator: log-mel features, the SOT prefix, -100 padding, start-token strip, <|endoftext|> kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import needs_shared
from tiny import WHISPER_BASE, tone

from finetune.collator import IGNORE_INDEX, SpeechCollator
from finetune.model import load_processor
from finetune.recipe import ModelConfig

SOT, ES, TRANSCRIBE, NOTIMESTAMPS, EOT = 50258, 50262, 50359, 50363, 50257  # real multilingual Whisper ids


def rows(tokenizer, texts: list[str]) -> list[dict]:
    return [{"waveform": tone(1.0 + i), "labels": tokenizer(t).input_ids} for i, t in enumerate(texts)]


@needs_shared
def test_real_tokenizer_ids_for_spanish_transcribe() -> None:
    processor = load_processor(ModelConfig(name=str(WHISPER_BASE), language="es", task="transcribe"))
    text_ids = processor.tokenizer("Hola mundo", add_special_tokens=False).input_ids
    batch = SpeechCollator(processor, decoder_start_token_id=SOT)(rows(processor.tokenizer, ["Hola mundo"]))
    # SOT stripped (the model prepends it when shifting right); language, task, no-timestamps, text, EOT kept.
    assert batch["labels"][0].tolist() == [ES, TRANSCRIBE, NOTIMESTAMPS, *text_ids, EOT]
    assert batch["input_features"].shape == (1, 80, 3000)


def test_padding_is_masked_but_real_end_of_text_stays(processor) -> None:
    tok = processor.tokenizer
    sot, eot = tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.pad_token_id == eot  # the trap: padding and the real end share one id
    batch = SpeechCollator(processor, decoder_start_token_id=sot)(rows(tok, ["hola", "buenos días"]))
    short, long = batch["labels"].tolist()
    expected_short = tok("hola").input_ids[1:]
    assert short[: len(expected_short)] == expected_short and expected_short[-1] == eot
    assert short[len(expected_short):] == [IGNORE_INDEX] * (len(long) - len(expected_short))
    assert long == tok("buenos días").input_ids[1:] and long[-1] == eot
    prefix = [tok.convert_tokens_to_ids(t) for t in ("<|es|>", "<|transcribe|>", "<|notimestamps|>")]
    assert short[:3] == prefix and long[:3] == prefix


def test_start_token_kept_when_it_is_not_the_decoder_start(processor) -> None:
    tok = processor.tokenizer
    # Labels that do not begin with the decoder start token (e.g. tokenized without the prefix) stay whole;
    # comparing with bos (<|endoftext|>) instead, as some scripts do, would strip nothing or the wrong token.
    plain = [{"waveform": tone(1.0), "labels": tok("hola", add_special_tokens=False).input_ids}]
    batch = SpeechCollator(processor, decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"))(plain)
    assert batch["labels"][0].tolist() == tok("hola", add_special_tokens=False).input_ids


def test_features_match_the_feature_extractor(processor) -> None:
    wave = tone(2.0, seed=3)
    batch = SpeechCollator(processor, decoder_start_token_id=0)([{"waveform": wave.tolist(), "labels": [0, 1]}])
    expected = processor.feature_extractor(wave, sampling_rate=16_000, return_tensors="pt").input_features
    assert torch.allclose(batch["input_features"], expected)
    assert batch["input_features"].dtype == torch.float32 and np.isfinite(batch["input_features"].numpy()).all()


@pytest.mark.parametrize("language,token", [("es", "<|es|>"), ("en", "<|en|>"), ("de", "<|de|>")])
def test_language_token_follows_the_recipe(processor, language: str, token: str) -> None:
    processor.tokenizer.set_prefix_tokens(language=language, task="transcribe", predict_timestamps=False)
    ids = processor.tokenizer("x").input_ids
    assert processor.tokenizer.convert_ids_to_tokens(ids[:4]) == ["<|startoftranscript|>", token, "<|transcribe|>",
                                                                 "<|notimestamps|>"]
