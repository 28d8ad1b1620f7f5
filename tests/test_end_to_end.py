"""finetune/run.py as a user runs it, in a subprocess: one process, and two DDP ranks on CPU (gloo)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe
from runs import MODULE, TWO_RANKS, first_logged_step, free_port, run_cli
from tiny import BAD_ROWS, bad_input_corpus, tone

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_full_run_writes_every_output(tmp_path: Path, timestamp_model_dir: Path, corpus_dir: Path) -> None:
    """A packed-window run whose test set is also scored long-form."""
    out = tmp_path / "run"
    recipe = tiny_recipe(timestamp_model_dir, corpus_dir, out)
    recipe["data"]["windows"] = {"mode": "packed"}
    recipe["data"]["test"][0]["long_form_s"] = 30
    done = run_cli(recipe, tmp_path, "train.report_to=tensorboard")
    assert "Traceback" not in done.stderr
    assert list((out / "tensorboard").glob("events.out.tfevents.*")), "no TensorBoard events in the run directory"
    for name in ["recipe.yaml", "environment.json", "dropped_rows.jsonl", "report.json", "report.md", "report.html",
                 "predictions.jsonl", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "merged/model.safetensors", "merged/generation_config.json"]:
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    tiny_test = report["sets"]["tiny test"]
    assert set(tiny_test["fine_tuned"]) == set(tiny_test["zero_shot"]) >= {"wer", "cer", "wer_ortho", "cer_ortho",
                                                                          "real_time_factor", "repeated_ngram_rate"}
    assert report["schema_version"] == 2 and report["merged"]["parity"]["ok"]
    assert report["merged"]["parity"]["clips"] == 2 and report["training"]["global_step"] == 2
    assert any("eval_wer" in h for h in report["log_history"])
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and {"set", "id", "ref", "hyp", "wer", "hyp_zero_shot"} <= set(predictions[0])
    assert "Done. tiny test: WER" in done.stderr and "; adapter strength " in done.stderr
    strength = report["adapter_scale"]
    assert strength["mode"] == "auto" and [p["scale"] for p in strength["points"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert json.loads((out / "adapter" / "adapter_scale.json").read_text())["scale"] == strength["chosen"]
    assert json.loads((out / "environment.json").read_text())["world_size"] == 1
    assert "parity with base+adapter: 2/2 identical" in done.stderr
    generation = json.loads((out / "merged" / "generation_config.json").read_text())
    assert generation["language"] == "es" and generation["task"] == "transcribe"
    assert not list(out.glob(".*tmp*")), "a temporary directory was left behind"
    long_form = tiny_test["fine_tuned"]["long_form"]  # 4 test clips of 1.0-1.3 s: one file, 3 boundaries
    assert long_form["files"] == 1 and long_form["boundaries"] == 3 and tiny_test["zero_shot"]["long_form"]
    assert "## Long-form" in (out / "report.md").read_text() and "<h2>Long-form</h2>" in \
        (out / "report.html").read_text()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["data"]["windows"]["mode"] == "packed"
    assert "Training windows (packed): 8 clips in 1 windows" in done.stderr


def test_merged_model_loads_in_a_plain_pipeline(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    out = tmp_path / "run"
    run_cli(tiny_recipe(tiny_model_dir, corpus_dir, out, output={"parity_clips": 1}), tmp_path,
            "output.parity_clips=1", "eval.baseline=false")
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(out / "merged"))
    assert asr.model.generation_config.language == "es"
    assert isinstance(asr({"raw": tone(1.0), "sampling_rate": 16_000})["text"], str)


def test_check_mode_trains_nothing(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    out = tmp_path / "run"
    done = run_cli(tiny_recipe(tiny_model_dir, corpus_dir, out), tmp_path, "--check")
    assert "Check passed" in done.stderr and "| train |" in done.stdout  # the data table goes to stdout
    assert not out.exists()  # --check writes nothing


def test_missing_local_model_and_unreachable_hub_model_say_what_to_do(tmp_path: Path, corpus_dir: Path) -> None:
    done = run_cli(tiny_recipe(tmp_path / "no-model", corpus_dir, tmp_path / "run"), tmp_path, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "model.name: directory" in done.stderr and "does not exist" in done.stderr
    recipe = tiny_recipe(tmp_path, corpus_dir, tmp_path / "run")
    recipe["model"]["name"] = "openai/whisper-tiny"
    done = run_cli(recipe, tmp_path, check=False)  # HF_HUB_OFFLINE=1 in tests: as if the Hub were unreachable
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "could not load 'openai/whisper-tiny' from the Hugging Face Hub" in done.stderr
    assert "model.name=/path/to/whisper-dir" in done.stderr


def test_unreachable_hub_fails_at_once_not_after_retries(tmp_path: Path, corpus_dir: Path) -> None:
    recipe = tiny_recipe(tmp_path, corpus_dir, tmp_path / "run")
    recipe["model"]["name"] = "openai/whisper-tiny"
    # Online mode, but the Hub endpoint is a closed port on this machine: refused at once, like a dead network.
    closed = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
              "HF_HOME": str(tmp_path / "hf-home")}
    done = run_cli(recipe, tmp_path, "--check", check=False, env=closed)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "the Hub could not be reached" in done.stderr and "not in the local cache" in done.stderr


def test_two_ranks_train_with_the_loss_of_one(tmp_path: Path, tiny_model_dir: Path, even_corpus: Path) -> None:
    steps = {"max_steps": 1, "eval_steps": 1, "logging_steps": 1}
    one = tmp_path / "one"
    run_cli(tiny_recipe(tiny_model_dir, even_corpus, one, train={**steps, "per_device_train_batch_size": 4}),
            tmp_path, "output.merge=false")
    two = tmp_path / "two"
    # The two ranks also checkpoint activations (non-reentrant: reentrant fails with LoRA, and under DDP).
    done = run_cli(tiny_recipe(tiny_model_dir, even_corpus, two, train={**steps, "per_device_train_batch_size": 2}),
                   tmp_path, "output.merge=false", "train.gradient_checkpointing=true", launcher=TWO_RANKS,
                   entry=MODULE)  # accelerate launch -m finetune train
    environment = json.loads((two / "environment.json").read_text())
    assert environment["world_size"] == 2, "accelerate launch started one process, not two"
    assert "world size 2" in done.stderr
    single, ddp = first_logged_step(one), first_logged_step(two)
    # Equal token counts per rank: the DDP mean over ranks equals the single-process mean (the loss is not scaled
    # by the world size).
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-4)
    assert ddp["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-3)
    assert (two / "report.json").is_file()


def test_bad_input_trains_on_the_good_rows_and_reports_every_bad_one(tmp_path: Path, tiny_model_dir: Path,
                                                                    corpus_dir: Path) -> None:
    manifest = bad_input_corpus(tmp_path / "bad")
    recipe = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")
    recipe["data"]["train"] = [{"manifest": str(manifest), "audio_column": "path", "text_column": "sentence",
                                "language_column": "lang", "name": "bad-input"}]
    recipe["data"]["drop_silence"] = True
    check = run_cli(recipe, tmp_path, "--check")
    assert "| train | bad-input | 13 | 5 |" in check.stdout
    done = run_cli(recipe, tmp_path)
    for output in (check, done):
        assert "Traceback" not in output.stderr + output.stdout
    dropped = [json.loads(line) for line in (tmp_path / "run" / "dropped_rows.jsonl").read_text().splitlines()]
    by_file = {Path(row["audio"]).name: row["reason"] for row in dropped if row["source"] == "bad-input"}
    assert by_file == {name: reason for name, (_, reason) in BAD_ROWS.items()}
    assert json.loads((tmp_path / "run" / "report.json").read_text())["training"]["global_step"] == 2


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg (scripts/setup.sh)")
def test_one_recipe_mixes_an_audiofolder_a_csv_and_a_jsonl_manifest(tmp_path: Path, tiny_model_dir: Path,
                                                                    corpus_dir: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    tone_args = ["-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=44100"]
    video_args = ["-f", "lavfi", "-i", "color=c=blue:s=64x64:d=2", "-map", "1:v", "-map", "0:a", "-shortest"]
    for name, extra in [("a.mp3", []), ("b.mp3", []), ("c.mp4", video_args), ("d.webm", video_args)]:
        subprocess.run(["ffmpeg", "-v", "error", "-y", *tone_args, *extra, str(media / name)], check=True)
    (tmp_path / "calls.csv").write_text("clip,words\nmedia/a.mp3,hola\nmedia/c.mp4,buenas tardes\n")
    (tmp_path / "calls.jsonl").write_text('{"audio_file": "media/b.mp3", "ref": "adiós"}\n'
                                          '{"audio_file": "media/d.webm", "ref": "hasta luego"}\n')
    recipe = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")
    recipe["data"]["train"] = [
        {"path": str(corpus_dir), "split": "train", "name": "folder"},
        {"manifest": str(tmp_path / "calls.csv"), "audio_column": "clip", "text_column": "words", "name": "csv"},
        {"manifest": str(tmp_path / "calls.jsonl"), "audio_column": "audio_file", "text_column": "ref",
         "name": "jsonl"},
    ]
    check = run_cli(recipe, tmp_path, "--check")
    for line in ["| train | folder | 8 | 8 |", "| train | csv | 2 | 2 |", "| train | jsonl | 2 | 2 |",
                 "| eval | corpus", "| test | tiny test | 4 | 4 |"]:
        assert line in check.stdout, line
    run_cli(recipe, tmp_path)
    assert (tmp_path / "run" / "merged" / "model.safetensors").is_file()


def test_streamed_train_source_trains(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    recipe = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")
    recipe["data"]["train"][0]["streaming"] = True
    done = run_cli(recipe, tmp_path, "output.merge=false")
    assert "not counted (streamed)" in done.stderr
    assert json.loads((tmp_path / "run" / "report.json").read_text())["training"]["global_step"] == 2
