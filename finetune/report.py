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
from finetune.data import PreparedData, SourceCount, counts_table, test_loss_lines
from finetune.longform import LONG_FORM_NOTE, long_form_table
from finetune.metrics import normalizer_for, sclite_listing, top_errors
from finetune.model import precision_context
from finetune.outputs import log, write_json, write_text
from finetune.recipe import EvalConfig, Recipe
from finetune.report_html import html_page
from finetune.scoring import ModelFactory, adapter_disabled, score_sets
from finetune.significance import compare_rows, interval_of

SCHEMA_VERSION = 2
MODELS = ("zero_shot", "as_trained", "fine_tuned")
SUMMARY = ["wer", "wer_interval", "cer", "wer_ortho", "cer_ortho", "substitutions", "deletions", "insertions",
           "empty_output_rate", "repeated_ngram_rate", "max_length_rate", "real_time_factor", "clips_per_second"]


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


def regression_lines(report: dict[str, Any]) -> list[str]:
    """What the top of every report says about the guard sets."""
    pct = f"{100 * report.get('confidence', 0.95):g} %"
    lines = [f"REGRESSION on guard set {r['set']!r}: WER {r['zero_shot_wer']:.2f} -> {r['fine_tuned_wer']:.2f} "
             f"(+{r['delta_wer']:.2f} points, {pct} interval of the rise {r['low']:+.2f} .. {r['high']:+.2f}, "
             f"p = {r['p_value']:.3f}; threshold {report['guard_threshold']:g})" for r in report["regressions"]]
    lines += [f"Guard set {r['set']!r}: WER {r['zero_shot_wer']:.2f} -> {r['fine_tuned_wer']:.2f} "
              f"(+{r['delta_wer']:.2f} points) is within noise ({pct} interval of the rise {r['low']:+.2f} .. "
              f"{r['high']:+.2f}, p = {r['p_value']:.3f}): not flagged" for r in report.get("within_noise", [])]
    if lines:
        return lines
    guards = [name for name, e in report["sets"].items() if e["guard"]]
    unchecked = [name for name in guards if "zero_shot" not in report["sets"][name]]
    if unchecked:  # eval.baseline: false (or --no-baseline): nothing to compare with
        return [f"Guard sets NOT checked, no zero-shot baseline was scored: {', '.join(unchecked)}."]
    return [f"No guard set regressed (guards: {', '.join(guards)})."] if guards else []


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return f"{value[0]:.2f}-{value[1]:.2f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def summary_table(report: dict[str, Any]) -> str:
    pct = f"{100 * report.get('confidence', 0.95):g} %"
    header = ["set", "clips", "model", *[f"wer {pct} CI" if k == "wer_interval" else k for k in SUMMARY]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in report["sets"].items():
        for model in MODELS:
            if model in entry:
                cells = [_cell(entry[model][k]) for k in SUMMARY]
                label = f"{name} (guard)" if entry["guard"] else name
                lines.append(f"| {label} | {entry['utterances']} | {model.replace('_', '-')} | {' | '.join(cells)} |")
    return "\n".join(lines)


def strength_table(strength: dict[str, Any]) -> str:
    """Adapter strength -> in-domain and guard WER (with intervals; guards: change from strength 0)."""
    names = [strength["in_domain_set"], *strength["guards"]]
    lines = ["| strength | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for point in strength["points"]:
        cells = []
        for name in names:
            e = point["sets"].get(name)
            if e is None:
                cells.append("not scored")
                continue
            cell = f"{e['wer']:.2f} ({e['low']:.2f}-{e['high']:.2f})"
            if e["role"] == "guard" and point["scale"] != 0.0:
                cell += f", {e['delta']:+.2f}{' significant' if e['significantly_worse'] else ''}"
            cells.append(cell)
        mark = " **chosen**" if point["scale"] == strength["chosen"] else ""
        lines.append(f"| {point['scale']:g}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def strength_lines(report: dict[str, Any]) -> list[str]:
    strength = report.get("adapter_scale")
    if not strength:
        return []
    if strength["mode"] == "fixed":
        return ["## Adapter strength", f"Fixed by the recipe: {strength['chosen']:g} (1 = as trained)."]
    return ["## Adapter strength",
            f"Shipped strength **{strength['chosen']:g}** (0 = base model, 1 = as trained): {strength['reason']}. "
            f"WER with its {100 * report['confidence']:g} % interval; guard sets also show the change from "
            f"strength 0 and whether it is significant.", strength_table(strength)]


def warning_lines(report: dict[str, Any]) -> list[str]:
    """What the top of every report says about test sets scored on fewer rows than they hold."""
    return test_loss_lines([SourceCount(**c) for c in report.get("data") or []])


def long_form_lines(report: dict[str, Any]) -> list[str]:
    table = long_form_table(report)
    return [] if table is None else [f"## Long-form\n\n{LONG_FORM_NOTE}", table]


def markdown(report: dict[str, Any]) -> str:
    training = report["training"] or {}
    parts = ["# Evaluation report", *warning_lines(report), *regression_lines(report),
             f"Rates in percent. `wer`/`cer`: after Whisper's normalizer for the set's language ({report['normalizer']} "
             f"unless the set says otherwise); `_ortho`: as written; the WER interval is a bootstrap over "
             f"utterances. S/D/I: word substitutions, deletions, insertions. `repeated_ngram_rate`, "
             f"`max_length_rate`: hallucination signals. `real_time_factor`: generation seconds per audio second.",
             summary_table(report), *strength_lines(report), *long_form_lines(report)]
    for name, entry in report["sets"].items():
        parts.append(f"## {name}")
        buckets = entry["fine_tuned"]["wer_by_duration"]
        if buckets:
            parts.append("WER by clip duration (fine-tuned): " + ", ".join(
                f"{b['seconds'][0]:g}-{b['seconds'][1]:g} s: {b['wer']:.2f} ({b['utterances']} clips)"
                for b in buckets))
        errors = entry["top_errors"]
        for kind in ("substitutions", "deletions", "insertions"):
            if errors[kind]:
                parts.append(f"Most frequent {kind}: " + ", ".join(f"`{w}` x{n}" for w, n in errors[kind]))
        if entry["worst"]:
            parts.append("Worst utterances (fine-tuned):\n\n```\n" + "\n\n".join(entry["worst"]) + "\n```")
    if "global_step" in training:
        sessions = f" over {training['sessions']} sessions (resumed)" if training.get("sessions", 1) > 1 else ""
        parts.append(f"## Training\n\n{training['global_step']} steps in {training.get('train_runtime', 0):.0f} s"
                     f"{sessions}; "
                     f"best checkpoint `{training.get('best_checkpoint')}` ({training.get('best_metric')}).")
    if "fine_tuned_model" in training:
        parts.append(f"Fine-tuned model: `{training['fine_tuned_model']}`.")
    parity = (report["merged"] or {}).get("parity")
    if parity:
        parts.append(f"Merged checkpoint `{report['merged']['path']}`: {parity['identical']}/{parity['clips']} "
                     f"transcripts identical to base + adapter.")
    if report["data"]:
        parts.append("## Data\n\n" + counts_table([SourceCount(**{k: v for k, v in c.items()})
                                                   for c in report["data"]]))
    return "\n\n".join(parts) + "\n"


def final_line(report: dict[str, Any]) -> str:
    """One line for the end of a run's log: the headline numbers, and any regression."""
    parts = []
    for name, entry in report["sets"].items():
        tuned = entry["fine_tuned"]["wer"]
        base = entry.get("zero_shot", {}).get("wer")
        parts.append(f"{name}: WER {base:.2f} -> {tuned:.2f}" if base is not None else f"{name}: WER {tuned:.2f}")
    flags = [f"REGRESSION on guard set {r['set']!r} (+{r['delta_wer']:.2f} WER points, significant)"
             for r in report["regressions"]]
    strength = report.get("adapter_scale")
    scale = [f"adapter strength {strength['chosen']:g}"] if strength else []
    return "; ".join(flags + parts + scale)


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
    language = recipe.model.language
    with precision_context(next(peft_model.parameters()).device.type, recipe.eval_precision):
        sets = score_sets(models, processor, data.test, recipe.data.test_sets, recipe.eval, language,
                          known=_known_results(strength))
    normalizer = normalizer_for(language, processor.tokenizer)[0]
    report, predictions = build_report(sets, recipe.eval_settings(), language, normalizer, training,
                                       log_history, merged[0] if merged else None, data.counts, strength)
    write_reports(recipe.output_dir, report, predictions, audio_paths(data.test))
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
