"""Shared fixtures. Every test runs offline: nothing may wait on a network time-out."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A datasets cache of this session alone (set before `datasets` is imported; subprocesses inherit it): a result
# cached by an earlier session, or by the user's own runs, cannot hide a change to how rows are prepared.
SESSION_CACHE = tempfile.mkdtemp(prefix="finetune-tests-datasets-")
os.environ["HF_DATASETS_CACHE"] = SESSION_CACHE

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pytest  # noqa: E402

from tiny import ES_SYNTH, WHISPER_BASE, save_tiny_model, tiny_corpus, tiny_processor, tone, write_audiofolder  # noqa: E402,E501

EVEN_TEXTS = ["hola mundo", "casa verde", "gato negro", "perro azul"]  # equal length: equal token counts

needs_shared = pytest.mark.skipif(
    not (WHISPER_BASE.is_dir() and ES_SYNTH.is_dir()),
    reason=f"needs the real Whisper base and es-synth corpus in {WHISPER_BASE.parents[1]} (../shared beside the "
           "checkout); a fresh clone of the project does not have them",
)


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="session")
def timestamp_model_dir(tmp_path_factory) -> Path:
    """The tiny model with Whisper's timestamp tokens: packed windows, long-form and word timestamps need them."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-whisper-timestamps"), timestamps=True)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def even_corpus(tmp_path_factory) -> Path:
    """4 training clips with equal label lengths, so every way of batching them (one batch of 4, 2 x 2 with
    accumulation, 2 ranks x 2) averages the loss over the same tokens."""
    root = tmp_path_factory.mktemp("even")
    for split, n in {"train": 4, "validation": 2, "test": 2}.items():
        write_audiofolder(root, [{"name": f"{i}.wav", "text": EVEN_TEXTS[i],
                                  "audio": tone(1.0, freq=300 + 50 * i, seed=i)} for i in range(n)], split)
    return root


@pytest.fixture()
def timestamp_processor():
    proc = tiny_processor(timestamps=True)
    proc.tokenizer.set_prefix_tokens(language="es", task="transcribe", predict_timestamps=False)
    return proc


@pytest.fixture()
def processor():
    proc = tiny_processor()
    proc.tokenizer.set_prefix_tokens(language="es", task="transcribe", predict_timestamps=False)
    return proc


def tiny_recipe(model_dir: Path, corpus: Path, output_dir: Path, **sections) -> dict:
    """A raw recipe dict for the tiny model and corpus; `sections` update the defaults section by section."""
    raw = {
        "model": {"name": str(model_dir), "language": "es"},
        "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0},
        "data": {
            "train": [{"path": str(corpus), "split": "train"}],
            "eval": [{"path": str(corpus), "split": "validation"}],
            "test": [{"path": str(corpus), "split": "test", "name": "tiny test"}],
            # One clip per training sample: the tests that compare losses across batchings need it; packed
            # windows have their own tests (test_packing.py, the full end-to-end run).
            "windows": {"mode": "none"},
        },
        "train": {"learning_rate": 1.0e-2, "max_steps": 2, "per_device_train_batch_size": 4, "eval_steps": 2,
                  "logging_steps": 1, "warmup_steps": 0.0},
        "eval": {"batch_size": 4, "max_new_tokens": 8},
        "output": {"parity_clips": 2},
        "output_dir": str(output_dir),
    }
    for name, values in sections.items():
        raw[name] = {**raw[name], **values} if isinstance(raw.get(name), dict) else values
    return raw
