"""Evaluation reports: zero-shot base vs fine-tuned on every test set, with error bars, and guard-set regressions.

Writes, into the run directory, as one set (all or none updated): report.json (schema below), report.md,
report.html (finetune/report_html.py; self-contained) and predictions.jsonl (one line per set and utterance).

report.json, schema_version 2 (rates in percent, times in seconds):
    regressions: [{set, zero_shot_wer, fine_tuned_wer, delta_wer, low, high, p_value}]   guard sets whose WER rose
        by more than guard_threshold AND significantly (paired bootstrap interval above zero)
    within_noise: [same fields]   guard sets that rose by more than guard_threshold, but not significantly
    sets.<name>: {guard, utterances, audio_seconds, delta_wer, paired: PAIRED, zero_shot: METRICS,
                  as_trained: METRICS (only when the shipped adapter strength is not 1), fine_tuned: METRICS,
                  worst: [sclite-style listing], top_errors: {substitutions, deletions, insertions}}
    METRICS: wer, wer_interval [low, high], cer (normalized), wer_ortho, cer_ortho (as written), hits,
             substitutions, deletions, insertions, reference_words, utterances, empty_references (skipped),
             empty_output_rate, insertion_rate, repeated_ngram_rate, max_length_rate,
             wer_by_duration [{seconds, utterances, wer}], seconds, clips_per_second, real_time_factor
    PAIRED: fine-tuned minus zero-shot WER: delta, low, high, p_value, confidence, significantly_worse/_better
    adapter_scale: {mode (auto|fixed), chosen, reason, pick, in_domain_set, guards, grid,
                    points: [{scale, in_domain_wer, worse_than, sets: {name: {role, wer, low, high,
                    delta, p_value, significantly_worse}}}]}
    confidence, bootstrap_samples, normalizer, language, decoding, training, log_history, merged, data
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from finetune.adapter_scale import scaled
from finetune.data import PreparedData
from finetune.data_counts import SourceCount
from finetune.metrics import normalizer_for, sclite_listing, top_errors
from finetune.model import precision_context
from finetune.outputs import log, write_json, write_text
from finetune.recipe import EvalConfig, Recipe
from finetune.report_html import html_page
from finetune.report_text import MODELS, markdown, regression_lines, summary_table, warning_lines
from finetune.scoring import ModelFactory, adapter_disabled, score_sets
from finetune.significance import compare_rows, interval_of

SCHEMA_VERSION = 2


def _details(entry: dict[str, Any], cfg: EvalConfig) -> dict[str, Any]:
    """Error bars from the per-utterance rows, then move the detail out of the metrics: worst listings, top errors,
    prediction rows."""
    rows: dict[str, list[dict]] = {}
    for model in MODELS:
        if model in entry:
            rows[model] = entry[model].pop("_utterances")
            alignments = entry[model].pop("_alignments")
            interval = interval_of(rows[model], cfg.bootstrap_samples, confidence=cfg.confidence)
            entry[model]["wer_interval"] = [interval.low, interval.high]
            if model == "fine_tuned":
                tuned_alignments = alignments
    if "zero_shot" in rows:
        paired = compare_rows(rows["zero_shot"], rows["fine_tuned"], cfg.bootstrap_samples,
                              confidence=cfg.confidence)
        entry["delta_wer"] = entry["fine_tuned"]["wer"] - entry["zero_shot"]["wer"]
        entry["paired"] = paired.as_dict()
    ranked = sorted((u for u in rows["fine_tuned"] if u["wer"]), key=lambda u: -u["wer"])  # errors only
    entry["worst"] = [sclite_listing(u["id"], tuned_alignments[u["id"]]) for u in ranked[:cfg.worst_utterances]]
    entry["worst_aligned"] = [{"id": u["id"], "wer": u["wer"], "duration": u["duration"],
                               "scores": [tuned_alignments[u["id"]][k] for k in "CSDI"],
                               "ops": tuned_alignments[u["id"]]["ops"]} for u in ranked[:cfg.worst_utterances]]
    entry["top_errors"] = top_errors(tuned_alignments)
    return rows


def _guard_flags(sets: dict[str, Any], threshold: float) -> tuple[list[dict], list[dict]]:
    """(regressions, within noise): guard sets that rose by more than the threshold, significantly or not."""
    flagged: tuple[list[dict], list[dict]] = ([], [])
    for name, e in sets.items():
        if e["guard"] and "paired" in e and e["delta_wer"] > threshold:
            paired = e["paired"]
            flagged[0 if paired["significantly_worse"] else 1].append({
                "set": name, "zero_shot_wer": e["zero_shot"]["wer"], "fine_tuned_wer": e["fine_tuned"]["wer"],
                "delta_wer": e["delta_wer"], "low": paired["low"], "high": paired["high"],
                "p_value": paired["p_value"]})
    return flagged


def build_report(sets: dict[str, Any], cfg: EvalConfig, language: str, normalizer: str, training: dict[str, Any],
                 log_history: list[dict], merged: dict[str, Any] | None, counts: list[SourceCount],
                 strength: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """report.json's content, and the predictions.jsonl rows."""
    predictions = []
    for name, entry in sets.items():
        rows = _details(entry, cfg)
        for i, row in enumerate(rows["fine_tuned"]):
            extra = {}
            for model in ("zero_shot", "as_trained"):
                if model in rows:
                    extra.update({f"hyp_{model}": rows[model][i]["hyp"], f"wer_{model}": rows[model][i]["wer"]})
            predictions.append({"set": name, **row, **extra})
    regressions, within_noise = _guard_flags(sets, cfg.guard_threshold)
    report = {
        "schema_version": SCHEMA_VERSION, "units": {"rates": "percent", "times": "seconds"},
        "normalizer": normalizer, "language": language, "decoding": cfg.model_dump(mode="json"),
        "guard_threshold": cfg.guard_threshold, "confidence": cfg.confidence,
        "bootstrap_samples": cfg.bootstrap_samples, "regressions": regressions, "within_noise": within_noise,
        "adapter_scale": {k: v for k, v in (strength or {}).items() if k != "results"} or None,
        "sets": sets, "training": training, "log_history": log_history, "merged": merged,
        "data": [{k: v for k, v in asdict(c).items() if k != "dropped_rows"} for c in counts],
    }
    return report, predictions


def _known_results(strength: dict[str, Any] | None) -> dict[str, dict[str, dict[str, Any]]]:
    """Guard-set results the strength search already has: zero-shot (0), as trained (1), fine-tuned (chosen)."""
    if not strength or "results" not in strength:
        return {}
    results, known = strength["results"], {}
    for name in strength["guards"]:
        for model, scale in (("zero_shot", 0.0), ("as_trained", 1.0), ("fine_tuned", strength["chosen"])):
            if name in results.get(scale, {}):  # a copy each: building the report pops the per-utterance detail
                known.setdefault(name, {})[model] = dict(results[scale][name])
    return known


def final_report(recipe: Recipe, peft_model: torch.nn.Module, processor: Any, data: PreparedData,
                 training: dict[str, Any], log_history: list[dict],
                 merged: tuple[dict[str, Any], torch.nn.Module] | None,
                 strength: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score zero-shot (adapter off), as trained (strength 1, when another strength ships) and fine-tuned (the
    merged checkpoint, else base + adapter at the shipped strength) on every test set; write the reports. Guard sets
    the strength search already scored are not transcribed again. Call it on the main process only."""
    chosen = strength["chosen"] if strength else 1.0
    models: dict[str, ModelFactory] = {"zero_shot": lambda: adapter_disabled(peft_model)} if recipe.eval.baseline \
        else {}
    if chosen != 1.0:
        models["as_trained"] = lambda: contextlib.nullcontext(peft_model)
    models["fine_tuned"] = (lambda: contextlib.nullcontext(merged[1])) if merged else \
        (lambda: scaled(peft_model, chosen))
    return score_and_report(recipe, models, processor, data.test, data.counts, training, log_history,
                            next(peft_model.parameters()).device.type, merged[0] if merged else None, strength)


def score_and_report(recipe: Recipe, models: dict[str, ModelFactory], processor: Any, test: dict[str, Any],
                     counts: list[SourceCount], training: dict[str, Any], log_history: list[dict], device_type: str,
                     merged: dict[str, Any] | None = None, strength: dict[str, Any] | None = None,
                     output_dir: str | None = None) -> dict[str, Any]:
    """Score `models` (zero_shot, as_trained, fine_tuned: each a factory of a model in eval settings) on the test
    sets under eval.precision and write the four report files to `output_dir` (default: the recipe's)."""
    language = recipe.model.language
    with precision_context(device_type, recipe.eval_precision):
        sets = score_sets(models, processor, test, recipe.data.test_sets, recipe.eval, language,
                          known=_known_results(strength))
    normalizer = normalizer_for(language, processor.tokenizer)[0]
    report, predictions = build_report(sets, recipe.eval_settings(), language, normalizer, training,
                                       log_history, merged, counts, strength)
    write_reports(output_dir or recipe.output_dir, report, predictions, audio_paths(test))
    return report


def audio_paths(test: dict[str, Any]) -> dict[str, list[str]]:
    """Each test set's audio file per utterance (the HTML report plays the worst ones)."""
    return {name: list(ds["ref"]) if "ref" in ds.column_names else [] for name, ds in test.items()}


def write_reports(output_dir: str | Path, report: dict[str, Any], predictions: list[dict],
                  audio: dict[str, list[str]] | None = None) -> None:
    """The four report files, as a set: the old report.json goes first and the new one is written last, so
    whenever report.json exists the other three belong to it and are complete."""
    out = Path(output_dir)
    text = markdown(report)
    (out / "report.json").unlink(missing_ok=True)
    write_text(out / "predictions.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    write_text(out / "report.md", text)
    write_text(out / "report.html", html_page(report, regression_lines(report), audio or {},
                                                 warning_lines(report)))
    write_json(out / "report.json", report)
    log.info("Reports: %s, %s, %s", out / "report.md", out / "report.html", out / "report.json")
    log.info("Test sets, zero-shot vs fine-tuned:\n%s", summary_table(report))
    for line in regression_lines(report):
        (log.warning if report["regressions"] else log.info)(line)
    for line in warning_lines(report):
        log.warning(line)

