"""Batches for Whisper: log-mel features from waveforms, and labels padded with -100."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from finetune.recipe import SAMPLE_RATE

IGNORE_INDEX = -100  # label positions the loss skips
ENCODER_COLUMN = "encoder_hidden_states"  # cached encoder outputs (finetune/encoder_cache.py)


@dataclass
class SpeechCollator:
    """Rows with `input_features`, `waveform` or cached encoder outputs, and `labels` (prefix + text +
    <|endoftext|>) -> model inputs.

    The decoder start token (<|startoftranscript|>) is stripped from the labels only when every row starts with it:
    the model prepends it again when it shifts the labels right. Padding is masked from the attention mask, not by
    token id, because Whisper's pad and <|endoftext|> share an id and the real <|endoftext|> must stay in the loss.
    """

    processor: Any
    decoder_start_token_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if "prompt_length" in rows[0]:
            batch = {**self.audio_inputs(rows), **self.window_targets(rows)}
        else:
            padded = self.processor.tokenizer.pad({"input_ids": [row["labels"] for row in rows]},
                                                  return_tensors="pt")
            labels = padded["input_ids"].masked_fill(padded["attention_mask"].ne(1), IGNORE_INDEX)
            if (labels[:, 0] == self.decoder_start_token_id).all():
                labels = labels[:, 1:]
            batch = {**self.audio_inputs(rows), "labels": labels}
        if all("language" in row for row in rows):  # each clip's language, for generation (see WhisperTrainer)
            batch["language"] = [row["language"] for row in rows]
        return batch

    def window_targets(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Training windows (finetune/packing.py): the decoder reads the whole sequence, previous-text prompt
        included, so its inputs are given explicitly (the model's right shift would put <|startoftranscript|>
        first); each label is the next token, and predictions of prompt tokens or of <|startoftranscript|> itself
        are left out of the loss (-100), as Whisper was trained."""
        longest = max(len(row["labels"]) for row in rows) - 1
        pad = self.processor.tokenizer.pad_token_id
        inputs = torch.full((len(rows), longest), pad, dtype=torch.long)
        labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(rows):
            sequence = torch.as_tensor(row["labels"], dtype=torch.long)
            inputs[i, :len(sequence) - 1] = sequence[:-1]
            labels[i, :len(sequence) - 1] = sequence[1:]
            labels[i, :int(row["prompt_length"])] = IGNORE_INDEX
        return {"decoder_input_ids": inputs, "labels": labels}

    def audio_inputs(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """`input_features`, or `encoder_outputs` for rows with cached encoder outputs (the frozen-encoder fast
        path: the decoder reads them and the encoder does not run)."""
        if ENCODER_COLUMN in rows[0]:
            hidden = torch.from_numpy(np.stack([np.asarray(row[ENCODER_COLUMN], dtype=np.float32) for row in rows]))
            return {"encoder_outputs": BaseModelOutput(last_hidden_state=hidden)}
        return {"input_features": self.features(rows)}

    def features(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        """Log-mel features: cached ones as they are, otherwise computed from the 16 kHz waveforms."""
        if "input_features" in rows[0]:
            return torch.from_numpy(np.stack([np.asarray(row["input_features"], dtype=np.float32) for row in rows]))
        waveforms = [np.asarray(row["waveform"], dtype=np.float32) for row in rows]
        extracted = self.processor.feature_extractor(waveforms, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return extracted["input_features"]
