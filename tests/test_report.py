"""Reports: guard-set regressions flagged everywhere, the HTML renders with its plots, the evaluate script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

from finetune.metrics import analyse, normalizer_for
from finetune.recipe import EvalConfig
from finetune.report import build_report, final_line, html_page, markdown, write_reports

ROOT = Path(__file__).resolve().parents[1]
_, BASIC = normalizer_for("es", None)


def scored(refs: list[str], hyps: list[str]) -> dict:
    return analyse(refs, hyps, [3.0] * len(refs), [False] * len(refs), BASIC) | {
        "seconds": 1.0, "clips_per_second": len(refs) / 1.0, "real_time_factor": 1.0 / (3.0 * len(refs))}


def synthetic_sets() -> dict:
    refs = ["el gato come", "la casa es blanca"]
    return {
        "in-domain": {"guard": False, "utterances": 2, "audio_seconds": 6.0,
                      "zero_shot": scored(refs, ["el pato come", "la cosa es"]),
                      "fine_tuned": scored(refs, refs)},
        "english (guard)": {"guard": True, "utterances": 2, "audio_seconds": 6.0,
                            "zero_shot": scored(["hello world", "good morning"], ["hello world", "good morning"]),
                            "fine_tuned": scored(["hello world", "good morning"], ["hola world", "good morning"])},
    }


def test_guard_regression_is_flagged_at_the_top_and_in_the_final_line(tmp_path: Path) -> None:
    report, predictions = build_report(synthetic_sets(), EvalConfig(guard_threshold=1.0), "es", "whisper-basic",
                                       {"global_step": 5}, [{"step": 1, "loss": 2.0}], None, [])
    assert report["regressions"] == [{"set": "english (guard)", "zero_shot_wer": 0.0, "fine_tuned_wer": 25.0,
                                      "delta_wer": 25.0}]
    assert report["sets"]["in-domain"]["delta_wer"] == pytest.approx(-100 * 3 / 7)
    text = markdown(report)
    assert text.splitlines()[2].startswith("REGRESSION on guard set 'english (guard)': WER 0.00 -> 25.00 (+25.00")
    assert final_line(report).startswith("REGRESSION on guard set 'english (guard)' (+25.00 WER points)")
    assert "REF:  LA COSA es blanca" not in text and "Scores: (#C #S #D #I)" in text
    assert len(predictions) == 4 and predictions[0]["set"] == "in-domain" and "wer_zero_shot" in predictions[0]
    page = html_page(report, text)
    assert page.count('<img alt=') == 3 and 'class="regression"' in page
    write_reports(tmp_path, report, predictions)
    assert json.loads((tmp_path / "report.json").read_text())["schema_version"] == 1


def test_no_regression_within_threshold() -> None:
    report, _ = build_report(synthetic_sets(), EvalConfig(guard_threshold=30.0), "es", "whisper-basic", {}, [], None,
                             [])
    assert report["regressions"] == [] and "No guard set regressed (guards: english (guard))." in markdown(report)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (bash scripts/setup.sh --dev)")
def test_report_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    report, predictions = build_report(synthetic_sets(), EvalConfig(), "es", "whisper-basic", {"global_step": 2},
                                       [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0, "eval_wer": 30.0}], None,
                                       [])
    write_reports(tmp_path, report, predictions)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    page = (tmp_path / "report.html").as_uri()
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert 'data-images="3"' in dom.stdout and 'data-images-loaded="3"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,1600", page],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_evaluate_script_scores_a_run(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    from test_end_to_end import run_cli

    out = tmp_path / "run"
    recipe = tiny_recipe(tiny_model_dir, corpus_dir, out)
    recipe["data"]["test"].append({"path": str(corpus_dir), "split": "validation", "name": "guard", "guard": True})
    run_cli(recipe, tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(path), "--sets", "tiny test",
                           "--output", str(tmp_path / "eval"), "eval.guard_threshold=1000"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "eval" / "report.json").read_text())
    first = json.loads((out / "report.json").read_text())
    assert list(again["sets"]) == ["tiny test"]
    # The script scores the run's merged/ checkpoint: the same numbers as the run's own report.
    for model in ("zero_shot", "fine_tuned"):
        assert again["sets"]["tiny test"][model]["wer"] == first["sets"]["tiny test"][model]["wer"]
    assert first["sets"]["guard"]["guard"] is True
    # Base + adapter instead of the merged checkpoint: the zero-shot model is that base with LoRA off.
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(path), "--sets", "tiny test",
                           "--adapter", str(out / "adapter"), "--output", str(tmp_path / "eval-adapter")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = json.loads((tmp_path / "eval-adapter" / "report.json").read_text())
    for model in ("zero_shot", "fine_tuned"):
        assert adapter["sets"]["tiny test"][model]["wer"] == first["sets"]["tiny test"][model]["wer"]
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(path), "--sets", "nope"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no test set named ['nope']" in bad.stderr


def test_guard_sets_without_a_baseline_are_reported_unchecked() -> None:
    from finetune.report import regression_lines

    sets = {"English": {"guard": True, "fine_tuned": {"wer": 11.0}}, "es": {"guard": False, "fine_tuned": {}}}
    assert regression_lines({"regressions": [], "sets": sets}) == [
        "Guard sets NOT checked, no zero-shot baseline was scored: English."]
    sets["English"]["zero_shot"] = {"wer": 10.5}
    assert regression_lines({"regressions": [], "sets": sets}) == ["No guard set regressed (guards: English)."]
