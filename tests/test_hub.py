"""Publishing: the staged upload folder and its model card (metadata that huggingface_hub parses back)."""

from __future__ import annotations

import json
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
    from runs import run_cli

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
    from runs import free_port, run_cli

    recipe = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")
    recipe["hub"] = {"push": True, "repo_id": "someone/whisper-tiny-es"}  # the Hub endpoint: a closed local port
    closed = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
              "HF_TOKEN": "hf_not_a_secret"}
    done = run_cli(recipe, tmp_path, env=closed)  # exits 0: training, merge and reports are done and kept
    assert "Push failed; the run's outputs are intact. Retry with: finetune push" in done.stderr
    assert "failed 4 times" in done.stderr and "hf_not_a_secret" not in done.stdout + done.stderr
    assert (tmp_path / "run" / "report.json").is_file()
    assert (tmp_path / "run" / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "hub-upload" / "adapter" / "README.md").is_file()


def hub_env(hub, tmp_path: Path, token: str = "hf_test_token") -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint,
            "HF_TOKEN": token, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1"}


def push(run_dir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "push.py"), str(run_dir), *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_push_to_a_local_hub_and_load_the_adapter_back(tmp_path: Path, finished_run: Path,
                                                      tiny_model_dir: Path) -> None:
    from hub_server import FakeHub

    with FakeHub() as hub:
        done = push(finished_run, hub_env(hub, tmp_path), "--upload", "both")
        assert done.returncode == 0, done.stderr[-3000:]
        adapter, merged = hub.repos["someone/whisper-tiny-es"], hub.repos["someone/whisper-tiny-es-merged"]
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json",
                "generation_config.json"} <= set(adapter["files"])
        assert {"model.safetensors", "config.json", "README.md"} <= set(merged["files"])
        assert adapter["private"] is True and adapter["commits"][0]["summary"].startswith("Upload fine-tuned")
        assert b"model-index" in adapter["files"]["README.md"]
        assert b'pipeline("automatic-speech-recognition", model="someone/whisper-tiny-es-merged")' in \
            merged["files"]["README.md"]
        assert hub.validated >= 2  # both cards passed the client's metadata validation (huggingface_hub's parsers)
        again = push(finished_run, hub_env(hub, tmp_path))  # an existing repo is updated, not an error
        assert again.returncode == 0 and len(adapter["commits"]) == 2
        # Download through the same server: peft loads the adapter and transcribes like the local copy.
        script = (
            "import sys, json, torch; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests'];"
            "from peft import PeftModel; from transformers import WhisperForConditionalGeneration;"
            "from tiny import tone; from finetune.model import load_processor; from finetune.recipe import ModelConfig;"
            "p = load_processor(ModelConfig(name=sys.argv[2]));"
            "f = p.feature_extractor(tone(1.0), sampling_rate=16000, return_tensors='pt').input_features;"
            "out = {};"
            "for name, src in (('hub', 'someone/whisper-tiny-es'), ('local', sys.argv[3])):"
            "  m = PeftModel.from_pretrained(WhisperForConditionalGeneration.from_pretrained(sys.argv[2]), src).eval();"
            "  out[name] = m.generate(input_features=f, language='es', max_new_tokens=8).tolist()\n"
            "print(json.dumps(out))")
        loaded = subprocess.run([sys.executable, "-c", script.replace(";for", "\nfor"), str(ROOT), str(tiny_model_dir),
                                 str(finished_run / "adapter")], capture_output=True, text=True, timeout=300,
                                env=hub_env(hub, tmp_path))
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        result = json.loads(loaded.stdout.strip().splitlines()[-1])
        assert result["hub"] == result["local"]


def test_push_retries_then_explains_401_and_403(tmp_path: Path, finished_run: Path) -> None:
    from hub_server import FakeHub

    with FakeHub() as hub:
        hub.fail_next = 2  # two 503s, then the Hub answers: the push goes through after backing off
        done = push(finished_run, hub_env(hub, tmp_path), "--repo-id", "someone/retried")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "someone/retried" in hub.repos
        done = push(finished_run, hub_env(hub, tmp_path, token="hf_wrong"), "--repo-id", "someone/denied")
        assert done.returncode == 2 and "401 Unauthorized" in done.stderr and "hf auth login" in done.stderr
        assert "hf_wrong" not in done.stdout + done.stderr
        hub.forbidden.add("someone/theirs")
        hub.repos["someone/theirs"] = {"private": False, "files": {}, "commits": []}
        done = push(finished_run, hub_env(hub, tmp_path), "--repo-id", "someone/theirs")
        assert done.returncode == 2 and "403 Forbidden" in done.stderr
        assert (finished_run / "adapter" / "adapter_model.safetensors").is_file()  # local outputs untouched


def test_a_run_with_push_uploads_and_never_writes_the_token(tmp_path: Path, tiny_model_dir: Path,
                                                           corpus_dir: Path) -> None:
    from hub_server import FakeHub
    from runs import run_cli

    token = "hf_test_token"
    recipe = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")
    recipe["hub"] = {"push": True, "repo_id": "someone/from-a-run", "upload": "both", "private": False}
    with FakeHub(token=token) as hub:
        done = run_cli(recipe, tmp_path, env=hub_env(hub, tmp_path, token))
        assert "Pushed adapter to someone/from-a-run" in done.stderr
        assert "Pushed merged to someone/from-a-run-merged" in done.stderr
        assert "adapter_model.safetensors" in hub.repos["someone/from-a-run"]["files"]
        assert hub.repos["someone/from-a-run"]["private"] is False
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert written and all(token.encode() not in p.read_bytes() for p in written)
    assert token not in done.stdout + done.stderr
