"""The report as text: report.md, the summary tables, the lines about guard sets and lost rows at the top of
every report, and the run's last log line. Reads report.json's content only (finetune/report.py builds it)."""

from __future__ import annotations

from typing import Any

from finetune.data_counts import SourceCount, counts_table, test_loss_lines
from finetune.longform import LONG_FORM_NOTE, long_form_table

MODELS = ("zero_shot", "as_trained", "fine_tuned")
SUMMARY = ["wer", "wer_interval", "cer", "wer_ortho", "cer_ortho", "substitutions", "deletions", "insertions",
           "empty_output_rate", "repeated_ngram_rate", "max_length_rate", "real_time_factor", "clips_per_second"]


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
    names, points = strength_grid(strength)
    lines = ["| strength | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for point, entries in points:
        cells = ["not scored" if e is None else f"{e['wer']:.2f} ({e['low']:.2f}-{e['high']:.2f})" +
                 (f", {e['delta']:+.2f}{' significant' if e['significantly_worse'] else ''}"
                  if shows_change(e, point) else "") for e in entries]
        mark = " **chosen**" if point["scale"] == strength["chosen"] else ""
        lines.append(f"| {point['scale']:g}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def strength_grid(strength: dict[str, Any]) -> tuple[list[str], list[tuple[dict, list[dict | None]]]]:
    """The strength table's content, for Markdown and HTML alike: the set names (in-domain first), and per
    strength its point and each set's entry (None: not scored at that strength)."""
    names = [strength["in_domain_set"], *strength["guards"]]
    return names, [(point, [point["sets"].get(name) for name in names]) for point in strength["points"]]


def shows_change(entry: dict[str, Any], point: dict[str, Any]) -> bool:
    """Guard sets show their change from strength 0 (at 0 itself there is none)."""
    return entry["role"] == "guard" and point["scale"] != 0.0


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
