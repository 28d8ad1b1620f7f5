"""Evaluation reports: zero-shot base vs fine-tuned on every test set, errors people can read, guard-set regressions.

Writes, into the run directory: report.json (schema below), report.md, report.html (self-contained: plots embedded
as PNG) and predictions.jsonl (one line per set and utterance).

report.json, schema_version 1 (rates in percent, times in seconds):
    regressions: [{set, zero_shot_wer, fine_tuned_wer, delta_wer}]   guard sets whose WER rose > guard_threshold
    sets.<name>: {guard, utterances, audio_seconds, delta_wer, zero_shot: METRICS, fine_tuned: METRICS,
                  worst: [sclite-style listing], top_errors: {substitutions, deletions, insertions}}
    METRICS: wer, cer (normalized), wer_ortho, cer_ortho (as written), hits, substitutions, deletions, insertions,
             reference_words, utterances, empty_references (skipped), empty_output_rate, insertion_rate,
             repeated_ngram_rate, max_length_rate, wer_by_duration [{seconds, utterances, wer}], seconds,
             clips_per_second, real_time_factor
    normalizer, language, decoding, training, log_history, merged, data
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ContextManager

import torch
from datasets import Dataset

from finetune.data import PreparedData, SourceCount, counts_table
from finetune.metrics import analyse, normalizer_for, sclite_listing, top_errors
from finetune.model import precision_context, transcribe_dataset
from finetune.outputs import log, write_json, write_text
from finetune.recipe import EvalConfig, Recipe, Source

SCHEMA_VERSION = 1
MODELS = ("zero_shot", "fine_tuned")
SUMMARY = ["wer", "cer", "wer_ortho", "cer_ortho", "substitutions", "deletions", "insertions", "empty_output_rate",
           "repeated_ngram_rate", "max_length_rate", "real_time_factor", "clips_per_second"]
ModelFactory = Callable[[], ContextManager[torch.nn.Module]]


@contextlib.contextmanager
def adapter_disabled(peft_model) -> Iterator[torch.nn.Module]:
    """The base model inside a PeftModel, exactly: LoRA switched off for the duration."""
    with peft_model.disable_adapter():
        yield peft_model


def evaluate_model(model: torch.nn.Module, processor: Any, dataset: Dataset, cfg: EvalConfig,
                   normalize: Callable[[str], str]) -> dict[str, Any]:
    """Transcribe a set and analyse it; keys starting with _ hold the per-utterance detail."""
    transcripts = transcribe_dataset(model.eval(), processor, dataset, cfg.batch_size)
    durations = [float(d) for d in dataset["duration"]]
    result = analyse(list(dataset["text"]), transcripts.texts, durations, transcripts.hit_max_length, normalize)
    audio_seconds = sum(durations)
    result.update(seconds=transcripts.seconds, clips_per_second=len(dataset) / max(transcripts.seconds, 1e-9),
                  real_time_factor=transcripts.seconds / max(audio_seconds, 1e-9))
    return result


def score_sets(models: dict[str, ModelFactory], processor: Any, test: dict[str, Dataset], sources: list[Source],
               cfg: EvalConfig, language: str) -> dict[str, Any]:
    """Every test set under every model ("zero_shot", "fine_tuned"), scored with its language's normalizer."""
    by_name = {src.label: src for src in sources}
    sets: dict[str, Any] = {}
    for name, dataset in test.items():
        src = by_name.get(name)
        normalizer, normalize = normalizer_for((src.language if src else None) or language, processor.tokenizer)
        entry: dict[str, Any] = {"guard": bool(src and src.guard), "utterances": len(dataset),
                                 "audio_seconds": float(sum(dataset["duration"])), "normalizer": normalizer}
        for model_name, factory in models.items():
            with factory() as model:
                entry[model_name] = evaluate_model(model, processor, dataset, cfg, normalize)
            log.info("%s, %s: WER %.2f, CER %.2f, %.2f clips/s", name, model_name, entry[model_name]["wer"],
                     entry[model_name]["cer"], entry[model_name]["clips_per_second"])
        sets[name] = entry
    return sets


def _details(entry: dict[str, Any], worst: int) -> dict[str, Any]:
    """Move per-utterance detail out of the metrics: worst listings, top errors, prediction rows."""
    tuned = entry["fine_tuned"]
    utterances, alignments = tuned.pop("_utterances"), tuned.pop("_alignments")
    base = entry.get("zero_shot")
    base_rows = base.pop("_utterances") if base else None
    if base:
        base.pop("_alignments")
        entry["delta_wer"] = tuned["wer"] - base["wer"]
    ranked = sorted((u for u in utterances if u["wer"] is not None), key=lambda u: -u["wer"])[:worst]
    entry["worst"] = [sclite_listing(u["id"], alignments[u["id"]]) for u in ranked]
    entry["top_errors"] = top_errors(alignments)
    return {"rows": utterances, "base_rows": base_rows}


def build_report(sets: dict[str, Any], cfg: EvalConfig, language: str, normalizer: str, training: dict[str, Any],
                 log_history: list[dict], merged: dict[str, Any] | None,
                 counts: list[SourceCount]) -> tuple[dict[str, Any], list[dict]]:
    """report.json's content, and the predictions.jsonl rows."""
    predictions = []
    for name, entry in sets.items():
        detail = _details(entry, cfg.worst_utterances)
        for i, row in enumerate(detail["rows"]):
            extra = {"hyp_zero_shot": detail["base_rows"][i]["hyp"], "wer_zero_shot": detail["base_rows"][i]["wer"]} \
                if detail["base_rows"] else {}
            predictions.append({"set": name, **row, **extra})
    regressions = [{"set": name, "zero_shot_wer": e["zero_shot"]["wer"], "fine_tuned_wer": e["fine_tuned"]["wer"],
                    "delta_wer": e["delta_wer"]}
                   for name, e in sets.items() if e["guard"] and e.get("delta_wer", 0.0) > cfg.guard_threshold]
    report = {
        "schema_version": SCHEMA_VERSION, "units": {"rates": "percent", "times": "seconds"},
        "normalizer": normalizer, "language": language, "decoding": cfg.model_dump(mode="json"),
        "guard_threshold": cfg.guard_threshold, "regressions": regressions, "sets": sets, "training": training,
        "log_history": log_history, "merged": merged,
        "data": [{k: v for k, v in asdict(c).items() if k != "dropped_rows"} for c in counts],
    }
    return report, predictions


def regression_lines(report: dict[str, Any]) -> list[str]:
    if not report["regressions"]:
        guards = [name for name, e in report["sets"].items() if e["guard"]]
        unchecked = [name for name in guards if "zero_shot" not in report["sets"][name]]
        if unchecked:  # eval.baseline: false (or --no-baseline): nothing to compare with
            return [f"Guard sets NOT checked, no zero-shot baseline was scored: {', '.join(unchecked)}."]
        return [f"No guard set regressed (guards: {', '.join(guards)})."] if guards else []
    return [f"REGRESSION on guard set {r['set']!r}: WER {r['zero_shot_wer']:.2f} -> {r['fine_tuned_wer']:.2f} "
            f"(+{r['delta_wer']:.2f} points, threshold {report['guard_threshold']:g})" for r in report["regressions"]]


def summary_table(report: dict[str, Any]) -> str:
    header = ["set", "clips", "model", *SUMMARY]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in report["sets"].items():
        for model in MODELS:
            if model in entry:
                m = entry[model]
                cells = [f"{m[k]:.2f}" if isinstance(m[k], float) else str(m[k]) for k in SUMMARY]
                label = f"{name} (guard)" if entry["guard"] else name
                lines.append(f"| {label} | {entry['utterances']} | {model.replace('_', '-')} | {' | '.join(cells)} |")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    training = report["training"] or {}
    parts = ["# Evaluation report", *regression_lines(report),
             f"Rates in percent. `wer`/`cer`: after Whisper's normalizer for the set's language ({report['normalizer']} "
             f"unless the set says otherwise); `_ortho`: as written. "
             f"S/D/I: word substitutions, deletions, insertions. `repeated_ngram_rate`, `max_length_rate`: "
             f"hallucination signals. `real_time_factor`: generation seconds per audio second.",
             summary_table(report)]
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
        parts.append(f"## Training\n\n{training['global_step']} steps in {training.get('train_runtime', 0):.0f} s; "
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


def plots(report: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(title, PNG) for: training curves, zero-shot vs fine-tuned WER per set, WER by clip duration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    history = report["log_history"]
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    wers = [(h["step"], h["eval_wer"]) for h in history if "eval_wer" in h and "step" in h]
    if losses or wers:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        if losses:
            ax.plot(*zip(*losses), label="training loss", color="tab:blue")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if wers:
            ax2 = ax.twinx()
            ax2.plot(*zip(*wers), "o-", label="eval WER (%)", color="tab:red")
            ax2.set_ylabel("eval WER (%)")
        fig.legend(loc="upper center", ncols=2)
        figures.append(("Training loss and eval WER per step", fig))
    names = list(report["sets"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for k, model in enumerate(MODELS):
        values = [report["sets"][n][model]["wer"] if model in report["sets"][n] else 0.0 for n in names]
        ax.bar([i + (k - 0.5) * width for i in range(len(names))], values, width, label=model.replace("_", "-"))
    ax.set_xticks(range(len(names)), [n + (" (guard)" if report["sets"][n]["guard"] else "") for n in names],
                  fontsize=8)
    ax.set_ylabel("WER (%)")
    ax.legend()
    figures.append(("Zero-shot vs fine-tuned WER per set", fig))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name in names:
        for model, style in (("zero_shot", "--"), ("fine_tuned", "-")):
            buckets = report["sets"][name].get(model, {}).get("wer_by_duration", [])
            if buckets:
                ax.plot([f"{b['seconds'][0]:g}-{b['seconds'][1]:g}" for b in buckets], [b["wer"] for b in buckets],
                        style, marker="o", label=f"{name}, {model.replace('_', '-')}")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("WER (%)")
    ax.legend(fontsize=7)
    figures.append(("WER by clip duration", fig))
    rendered = []
    for title, fig in figures:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        rendered.append((title, buffer.getvalue()))
    return rendered


def summary_html(report: dict[str, Any]) -> str:
    """The summary table as HTML (the Markdown one, cell by cell)."""
    rows = [line.strip("|").split("|") for line in summary_table(report).splitlines()]
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>" for row in rows[2:])
    return f'<div style="overflow-x:auto"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def html_page(report: dict[str, Any], markdown_text: str) -> str:
    """A self-contained page: the plots as data: URIs, then the Markdown report as preformatted text."""
    images = "\n".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>" for title, png in plots(report))
    status = "regression" if report["regressions"] else "ok"
    flags = "".join(f'<p class="{status}">{html.escape(line)}</p>' for line in regression_lines(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>finetune evaluation report</title>
<style>body{{font-family:sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}}
.regression{{background:#fee;border:1px solid #c00;padding:.5rem;font-weight:bold}}
.ok{{background:#efe;border:1px solid #080;padding:.5rem}}
table{{border-collapse:collapse;font-size:.8rem}} td,th{{border:1px solid #ccc;padding:.2rem .4rem;text-align:right}}
td:first-child,th:first-child,td:nth-child(3){{text-align:left}}
pre{{background:#f6f6f6;padding:1rem;overflow-x:auto;font-size:.8rem}} figure{{display:inline-block;margin:.5rem}}
</style></head>
<body><h1>Evaluation report</h1>{flags}
{summary_html(report)}
{images}
<pre>{html.escape(markdown_text)}</pre>
<script>
// Headless checks read this: how many plots decoded into real images once the page loaded.
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = images.length;
}});
</script></body></html>
"""


def final_line(report: dict[str, Any]) -> str:
    """One line for the end of a run's log: the headline numbers, and any regression."""
    parts = []
    for name, entry in report["sets"].items():
        tuned = entry["fine_tuned"]["wer"]
        base = entry.get("zero_shot", {}).get("wer")
        parts.append(f"{name}: WER {base:.2f} -> {tuned:.2f}" if base is not None else f"{name}: WER {tuned:.2f}")
    flags = [f"REGRESSION on guard set {r['set']!r} (+{r['delta_wer']:.2f} WER points)" for r in report["regressions"]]
    return "; ".join(flags + parts)


def final_report(recipe: Recipe, trainer, processor: Any, data: PreparedData, training: dict[str, Any],
                 merged: tuple[dict[str, Any], torch.nn.Module] | None) -> dict[str, Any] | None:
    """Main process: score zero-shot (adapter off) and fine-tuned (the merged checkpoint, else base + adapter)
    on every test set, then write the reports."""
    if not trainer.is_world_process_zero():
        return None
    peft_model = trainer.model
    merged_info, tuned = merged if merged else (None, peft_model)
    models: dict[str, ModelFactory] = {"zero_shot": lambda: adapter_disabled(peft_model)} if recipe.eval.baseline \
        else {}
    models["fine_tuned"] = lambda: contextlib.nullcontext(tuned)
    language = recipe.model.language
    with precision_context(next(tuned.parameters()).device.type, recipe.eval_precision):
        sets = score_sets(models, processor, data.test, recipe.data.test_sets, recipe.eval, language)
    normalizer = normalizer_for(language, processor.tokenizer)[0]
    report, predictions = build_report(sets, recipe.eval_settings(), language, normalizer,
                                       training, trainer.state.log_history, merged_info, data.counts)
    write_reports(recipe.output_dir, report, predictions)
    return report


def write_reports(output_dir: str | Path, report: dict[str, Any], predictions: list[dict]) -> None:
    out = Path(output_dir)
    text = markdown(report)
    write_json(out / "report.json", report)
    write_text(out / "report.md", text)
    write_text(out / "report.html", html_page(report, text))
    write_text(out / "predictions.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    log.info("Reports: %s, %s, %s", out / "report.md", out / "report.html", out / "report.json")
    log.info("Test sets, zero-shot vs fine-tuned:\n%s", summary_table(report))
    for line in regression_lines(report):
        (log.warning if report["regressions"] else log.info)(line)
