"""Hermetic test fixtures: a tiny random Whisper (real architecture, byte-level vocabulary) and tiny audio corpora.

The tokenizer has Whisper's special tokens in Whisper's order (so <|es|> is <|startoftranscript|> + 1 + its index
in the language table, exactly as the real tokenizer computes it), but only 256 byte tokens instead of 50k BPE
merges. Nothing here touches the network or ../shared.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                          WhisperProcessor, WhisperTokenizer)
from tokenizers import pre_tokenizers
from transformers.models.whisper.tokenization_whisper import LANGUAGES

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WHISPER_BASE = SHARED / "models" / "whisper-base"
ES_SYNTH = SHARED / "data" / "es-synth"
TASKS = ["<|translate|>", "<|transcribe|>"]
SPECIALS = (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{code}|>" for code in LANGUAGES] + TASKS
            + ["<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"])


def tiny_tokenizer(timestamps: bool = False) -> WhisperTokenizer:
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIALS)})
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tokenizer.pad_token = "<|endoftext|>"
    if timestamps:
        # <|0.00|> ... <|30.00|> right after <|notimestamps|>, as plain added tokens like Whisper's (transformers
        # finds the first one as the last special token's id + 1). Off by default: a random model that can emit
        # them makes every generate() of the tests that do not need them ~20x slower.
        tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    return tokenizer


def tiny_processor(timestamps: bool = False) -> WhisperProcessor:
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80),
                            tokenizer=tiny_tokenizer(timestamps))


def tiny_model(tokenizer: WhisperTokenizer, seed: int = 0) -> WhisperForConditionalGeneration:
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448, decoder_start_token_id=sot, pad_token_id=eot,
        bos_token_id=eot, eos_token_id=eot, suppress_tokens=[], begin_suppress_tokens=[eot],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    # A plain GenerationConfig: one made by from_model_config() is regenerated on load, losing the fields below.
    generation = GenerationConfig(decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
                                  begin_suppress_tokens=[eot], suppress_tokens=[])
    generation.lang_to_id = {f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES}
    generation.task_to_id = {"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")}
    generation.no_timestamps_token_id = ids("<|notimestamps|>")
    generation.prev_sot_token_id = ids("<|startofprev|>")
    generation.is_multilingual = True
    generation.max_length = 448
    generation.alignment_heads = [[1, 0], [1, 1]]  # decoder layer, head: word timestamps read these
    model.generation_config = generation
    return model


def save_tiny_model(path: Path, seed: int = 0, timestamps: bool = False) -> Path:
    """A complete tiny checkpoint directory, loadable by finetune (model.name=<path>) and pipeline()."""
    processor = tiny_processor(timestamps)
    tiny_model(processor.tokenizer, seed).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tone(seconds: float, rate: int = 16_000, freq: float = 220.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A tone with a little noise: enough signal for features, deterministic."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    wave = wave.astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


SENTENCES = ["hola mundo", "buenos días", "el tren sale tarde", "una casa blanca", "dos perros negros",
             "la mesa está lista", "hace sol hoy", "vamos a casa"]


def write_audiofolder(root: Path, rows: list[dict], split: str = "train") -> Path:
    """rows: {"name", "text", "audio" (array) | "bytes" (raw file content), "rate"} -> <root>/<split>/."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "transcription"])
        for row in rows:
            if "bytes" in row:
                (folder / row["name"]).write_bytes(row["bytes"])
            else:
                sf.write(folder / row["name"], row["audio"], row.get("rate", 16_000))
            writer.writerow([row["name"], row["text"]])
    return folder


def tiny_corpus(root: Path, clips: dict[str, int] | None = None) -> Path:
    """A clean audiofolder corpus with train/validation/test splits of short tones with Spanish text."""
    clips = clips or {"train": 8, "validation": 4, "test": 4}
    for split, n in clips.items():
        rows = [{"name": f"{split}_{i}.wav", "text": SENTENCES[i % len(SENTENCES)],
                 "audio": tone(1.0 + 0.1 * i, freq=200 + 40 * i, seed=i)} for i in range(n)]
        write_audiofolder(root, rows, split)
    return root


BAD_ROWS = {  # file name: (transcript, why it must be dropped)
    "corrupt.wav": ("roto", "unreadable audio"),
    "zero.wav": ("vacío", "empty audio file (0 bytes)"),
    "missing.wav": ("perdido", "missing audio file"),
    "long.wav": ("largo", "longer than 30 s"),
    "quiet.wav": ("nada", "silence (below -50 dBFS)"),
    "no_text.wav": ("", "empty transcript"),
    "huge_text.wav": ("palabra " * 1000, "more than 448 label tokens"),
    "klingon.wav": ("qapla", "unknown language code 'xx'"),
}


def bad_input_corpus(root: Path) -> Path:
    """One CSV manifest mixing trainable clips (also stereo, 8/44.1/48 kHz) with every row-level kind of bad input.

    Returns the manifest; columns path,sentence,lang. Drops are expected with data.drop_silence=true.
    """
    root.mkdir(parents=True, exist_ok=True)
    good = {"good_0.wav": (tone(1.0), 16_000), "good_1.wav": (tone(1.2, freq=330), 16_000),
            "stereo_44k.wav": (tone(1.5, rate=44_100, channels=2), 44_100), "phone_8k.wav": (tone(1.0, rate=8_000),
                                                                                          8_000),
            "studio_48k.flac": (tone(1.1, rate=48_000), 48_000)}
    for name, (audio, rate) in good.items():
        sf.write(root / name, audio, rate)
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (root / "zero.wav").write_bytes(b"")
    for name, audio in {"long.wav": tone(31.0), "quiet.wav": np.zeros(16_000, np.float32),
                        "no_text.wav": tone(1.0), "huge_text.wav": tone(1.0), "klingon.wav": tone(1.0)}.items():
        sf.write(root / name, audio, 16_000)
    rows = [(name, SENTENCES[i], "es") for i, name in enumerate(good)]
    rows += [(name, text, "xx" if name == "klingon.wav" else "es") for name, (text, _) in BAD_ROWS.items()]
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "sentence", "lang"])
        writer.writerows(rows)
    return root / "manifest.csv"
