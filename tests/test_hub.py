"""Publishing: the staged upload folder and its model card (metadata that huggingface_hub parses back)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe
from huggingface_hub import ModelCard

from finetune.recipe import RecipeError, validate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir: Path, corpus_dir: Path) -> Path:
    from test_end_to_end import run_cli

    tmp = tmp_path_factory.mktemp("hub-run")
    recipe = tiny_recipe(tiny_model_dir, corpus_dir, tmp / "run")
    recipe["hub"] = {"repo_id": "someone/whisper-tiny-es", "upload": "both"}
    run_cli(recipe, tmp)
    return tmp / "run"


def test_dry_run_stages_adapter_and_merged_with_valid_cards(finished_run: Path) -> None:
    env = {**os.environ, "HF_TOKEN": "hf_secret_token_that_must_not_leak"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "push.py"), str(finished_run), "--dry-run"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "adapter -> someone/whisper-tiny-es:" in done.stdout
    assert "merged -> someone/whisper-tiny-es-merged:" in done.stdout
    adapter, merged = finished_run / "hub-upload" / "adapter", finished_run / "hub-upload" / "merged"
    assert {"adapter_config.json", "adapter_model.safetensors", "generation_config.json", "tokenizer.json",
            "README.md"} <= {p.name for p in adapter.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md"} <= {p.name for p in
                                                                                         merged.iterdir()}
    for folder, library in ((adapter, "peft"), (merged, "transformers")):
        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == library and card.data.pipeline_tag == "automatic-speech-recognition"
        assert card.data.language == ["es"]
        results = {(r.dataset_name, r.metric_name): r.metric_value for r in card.data.eval_results}
        assert ("tiny test", "WER (fine-tuned, normalized, %)") in results
        assert ("tiny test", "WER (zero-shot base, normalized, %)") in results
    everything = done.stdout + done.stderr + "".join(p.read_text(errors="ignore") for p in
                                                     finished_run.rglob("*") if p.is_file() and p.suffix in
                                                     {".md", ".json", ".yaml", ".jsonl", ".html"})
    assert "hf_secret_token_that_must_not_leak" not in everything


def test_hub_section_is_checked() -> None:
    raw = tiny_recipe(Path("/m"), Path("/c"), Path("/o"))
    raw["hub"] = {"push": True}
    with pytest.raises(RecipeError, match="push is true but repo_id is missing"):
        validate(raw)
    raw["hub"] = {"repo_id": "no-slash"}
    with pytest.raises(RecipeError, match="must look like <user-or-org>/<name>"):
        validate(raw)


def test_a_failed_push_leaves_the_run_whole(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    from test_end_to_end import free_port, run_cli

    recipe = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")
    recipe["hub"] = {"push": True, "repo_id": "someone/whisper-tiny-es"}  # the Hub endpoint: a closed local port
    closed = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
              "HF_TOKEN": "hf_not_a_secret"}
    done = run_cli(recipe, tmp_path, env=closed)  # exits 0: training, merge and reports are done and kept
    assert "Push failed; the run's outputs are intact. Retry with: python scripts/push.py" in done.stderr
    assert "failed 4 times" in done.stderr and "hf_not_a_secret" not in done.stdout + done.stderr
    assert (tmp_path / "run" / "report.json").is_file()
    assert (tmp_path / "run" / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "hub-upload" / "adapter" / "README.md").is_file()
