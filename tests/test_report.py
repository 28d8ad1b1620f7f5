"""Reports: guard-set regressions flagged everywhere, the HTML renders with its plots, the evaluate script."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from conftest import tiny_recipe
from tiny import tone

import finetune.report
from finetune.data_counts import SourceCount
from finetune.metrics import analyse, normalizer_for
from finetune.recipe import EvalConfig
from finetune.report import build_report, write_reports
from finetune.report_html import html_page
from finetune.report_text import final_line, markdown

ROOT = Path(__file__).resolve().parents[1]
_, BASIC = normalizer_for("es", None)


def scored(refs: list[str], hyps: list[str]) -> dict:
    return analyse(refs, hyps, [3.0] * len(refs), [False] * len(refs), BASIC) | {
        "seconds": 1.0, "clips_per_second": len(refs) / 1.0, "real_time_factor": 1.0 / (3.0 * len(refs))}


ENGLISH = ["hello world", "good morning", "thank you", "see you soon", "call me later", "the red door",
           "open the window", "a cup of tea", "on the table", "it is late", "we are here", "please wait"]


def synthetic_sets(wrong: int = 10) -> dict:
    """An in-domain set the fine-tuned model got right, and an English guard set it got worse on `wrong` clips."""
    refs = ["el gato come", "la casa es blanca"]
    worse = [("hola " + r.split(" ", 1)[1]) if i < wrong else r for i, r in enumerate(ENGLISH)]
    return {
        "in-domain": {"guard": False, "utterances": 2, "audio_seconds": 6.0,
                      "zero_shot": scored(refs, ["el pato come", "la cosa es"]),
                      "fine_tuned": scored(refs, refs)},
        "english (guard)": {"guard": True, "utterances": len(ENGLISH), "audio_seconds": 36.0,
                            "zero_shot": scored(ENGLISH, ENGLISH), "fine_tuned": scored(ENGLISH, worse)},
    }


def test_guard_regression_is_flagged_at_the_top_and_in_the_final_line(tmp_path: Path) -> None:
    report, predictions = build_report(synthetic_sets(), EvalConfig(guard_threshold=1.0), "es", "whisper-basic",
                                       {"global_step": 5}, [{"step": 1, "loss": 2.0}], None, [])
    words = sum(len(r.split()) for r in ENGLISH)
    [flag] = report["regressions"]
    assert flag["set"] == "english (guard)" and flag["zero_shot_wer"] == 0.0
    assert flag["fine_tuned_wer"] == pytest.approx(100 * 10 / words) and flag["low"] > 0 and flag["p_value"] < 0.05
    assert report["sets"]["in-domain"]["delta_wer"] == pytest.approx(-100 * 3 / 7)
    low, high = report["sets"]["english (guard)"]["fine_tuned"]["wer_interval"]
    assert low < flag["fine_tuned_wer"] < high
    text = markdown(report)
    assert text.splitlines()[2].startswith("REGRESSION on guard set 'english (guard)': WER 0.00 -> 30.30 (+30.30 points, 95 % interval of the rise +")
    assert final_line(report).startswith("REGRESSION on guard set 'english (guard)' (+30.30 WER points, significant)")
    assert "REF:  LA COSA es blanca" not in text and "Scores: (#C #S #D #I)" in text
    assert len(predictions) == 14 and predictions[0]["set"] == "in-domain" and "wer_zero_shot" in predictions[0]
    page = html_page(report, ["REGRESSION ..."], {})
    assert page.count("<img alt=") == 3 and 'class="flag regression"' in page and 'class="w S"' in page
    write_reports(tmp_path, report, predictions)
    assert json.loads((tmp_path / "report.json").read_text())["schema_version"] == 2


def test_a_test_set_that_lost_rows_is_named_at_the_top_and_reports_are_written_as_a_set(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    lost = SourceCount(split="test", source="in-domain", rows=8, kept=7, dropped={"unreadable audio": 1})
    report, predictions = build_report(synthetic_sets(), EvalConfig(), "es", "whisper-basic", {}, [], None, [lost])
    line = "Test set 'in-domain' lost 1 of 8 rows (12 %: unreadable audio: 1); its scores cover the 7 kept"
    assert markdown(report).splitlines()[2] == line
    write_reports(tmp_path, report, predictions)
    assert html.escape(line) in (tmp_path / "report.html").read_text()
    # A kill between report files: the previous report.json is gone first, so no stale set passes for complete.
    real = finetune.report.write_text

    def killed(path, text):
        if Path(path).name == "report.html":
            raise KeyboardInterrupt
        real(path, text)
    monkeypatch.setattr(finetune.report, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        write_reports(tmp_path, report, predictions)
    assert not (tmp_path / "report.json").exists()


def test_a_rise_on_two_clips_is_within_noise_not_a_regression() -> None:
    sets = synthetic_sets(wrong=0)
    english = ENGLISH[:2]
    sets["english (guard)"].update(utterances=2, zero_shot=scored(english, english),
                                   fine_tuned=scored(english, ["hola world", "good morning"]))
    report, _ = build_report(sets, EvalConfig(guard_threshold=1.0), "es", "whisper-basic", {}, [], None, [])
    assert report["regressions"] == [] and report["within_noise"][0]["delta_wer"] == 25.0
    assert "is within noise" in markdown(report).splitlines()[2] and "REGRESSION" not in final_line(report)


def test_no_regression_within_threshold() -> None:
    report, _ = build_report(synthetic_sets(), EvalConfig(guard_threshold=40.0), "es", "whisper-basic", {}, [], None,
                             [])
    assert report["regressions"] == [] and "No guard set regressed (guards: english (guard))." in markdown(report)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (bash scripts/setup.sh --dev)")
def test_report_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    guard = {"role": "guard", "wer": 5.0, "low": 1.0, "high": 9.0, "delta": 0.0, "significantly_worse": False}
    strength = {"mode": "auto", "chosen": 0.5, "reason": "test", "in_domain_set": "eval", "guards": ["english (guard)"],
                "points": [{"scale": s, "in_domain_wer": 20 - 10 * s, "worse_than": [], "sets": {
                    "eval": {"role": "in-domain", "wer": 20 - 10 * s, "low": 15 - 10 * s, "high": 25 - 10 * s},
                    "english (guard)": {**guard, "delta": 4 * s, "significantly_worse": s == 1.0}}}
                    for s in (0.0, 0.5, 1.0)]}
    report, predictions = build_report(synthetic_sets(), EvalConfig(), "es", "whisper-basic", {"global_step": 2},
                                       [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0, "eval_wer": 30.0}], None,
                                       [], strength)
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0), 16_000)
    write_reports(tmp_path, report, predictions, {"english (guard)": [str(clip)] * len(ENGLISH)})
    page = (tmp_path / "report.html").read_text()
    assert page.count("<audio controls") == EvalConfig().worst_utterances and "Shipped strength <b>0.5</b>" in page
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    page = (tmp_path / "report.html").as_uri()
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert 'data-images="4"' in dom.stdout and 'data-images-loaded="4"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,2400", page],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_evaluate_script_scores_a_run(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    from runs import finetune, run_cli

    out = tmp_path / "run"
    recipe = tiny_recipe(tiny_model_dir, corpus_dir, out)
    recipe["data"]["test"].append({"path": str(corpus_dir), "split": "validation", "name": "guard", "guard": True})
    run_cli(recipe, tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = finetune("evaluate", str(path), "--sets", "tiny test", "--output", str(tmp_path / "eval"),
                    "eval.guard_threshold=1000")
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "eval" / "report.json").read_text())
    first = json.loads((out / "report.json").read_text())
    assert list(again["sets"]) == ["tiny test"]
    # The script scores the run's merged/ checkpoint: the same numbers as the run's own report.
    for model in ("zero_shot", "fine_tuned"):
        assert again["sets"]["tiny test"][model]["wer"] == first["sets"]["tiny test"][model]["wer"]
    assert first["sets"]["guard"]["guard"] is True
    # Base + adapter instead of the merged checkpoint: the zero-shot model is that base with LoRA off.
    done = finetune("evaluate", str(path), "--sets", "tiny test", "--adapter", str(out / "adapter"),
                    "--output", str(tmp_path / "eval-adapter"))
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = json.loads((tmp_path / "eval-adapter" / "report.json").read_text())
    for model in ("zero_shot", "fine_tuned"):
        assert adapter["sets"]["tiny test"][model]["wer"] == first["sets"]["tiny test"][model]["wer"]
    # Steps 7-9 again on the trained run, with another strength grid: new choice, baked, merged, reported.
    done = finetune("evaluate", str(path), "--choose-strength", "output.scale_grid=[0.0, 1.0]",
                    "output.scale_search=full")
    assert done.returncode in (0, 1), done.stderr[-3000:]
    redone = json.loads((out / "report.json").read_text())
    assert [p["scale"] for p in redone["adapter_scale"]["points"]] == [0.0, 1.0]
    assert all("guard" in p["sets"] for p in redone["adapter_scale"]["points"])
    assert json.loads((out / "adapter" / "adapter_scale.json").read_text())["scale"] == \
        redone["adapter_scale"]["chosen"]
    assert redone["training"]["global_step"] == 2 and redone["merged"]["parity"]["ok"]
    bad = finetune("evaluate", str(path), "--sets", "nope")
    assert bad.returncode == 2 and "no test set named ['nope']" in bad.stderr


def test_guard_sets_without_a_baseline_are_reported_unchecked() -> None:
    from finetune.report_text import regression_lines

    sets = {"English": {"guard": True, "fine_tuned": {"wer": 11.0}}, "es": {"guard": False, "fine_tuned": {}}}
    assert regression_lines({"regressions": [], "sets": sets}) == [
        "Guard sets NOT checked, no zero-shot baseline was scored: English."]
    sets["English"]["zero_shot"] = {"wer": 10.5}
    assert regression_lines({"regressions": [], "sets": sets}) == ["No guard set regressed (guards: English)."]


def test_guard_results_of_the_strength_search_are_reused_even_when_two_models_share_one(processor) -> None:
    """Strength 0 shipped: zero-shot and fine-tuned are the same search result; the report must not reuse one dict."""
    from datasets import Dataset

    from finetune.recipe import Source
    from finetune.report import _known_results
    from finetune.scoring import score_sets

    english = scored(ENGLISH[:3], ENGLISH[:3])
    strength = {"chosen": 0.0, "guards": ["en"], "results": {0.0: {"en": english}, 1.0: {"en": scored(
        ENGLISH[:3], ["hola world", "good morning", "thank you"])}}}
    dataset = Dataset.from_dict({"duration": [1.0, 1.0, 1.0], "text": ENGLISH[:3]})

    def never():
        raise AssertionError("a known result was transcribed again")

    models = {"zero_shot": never, "as_trained": never, "fine_tuned": never}
    sets = score_sets(models, processor, {"en": dataset}, [Source(path="x", name="en", guard=True, language="en")],
                      EvalConfig(), "es", known=_known_results(strength))
    report, predictions = build_report(sets, EvalConfig(), "es", "whisper-basic", {}, [], None, [], strength)
    entry = report["sets"]["en"]
    assert entry["delta_wer"] == 0.0 and entry["as_trained"]["wer"] == pytest.approx(100 / 6)  # 1 of 6 words
    assert len(predictions) == 3 and predictions[0]["hyp_as_trained"] == "hola world"
