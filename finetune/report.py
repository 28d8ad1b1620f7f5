"""Final scoring of the test sets, zero-shot base vs fine-tuned, written as results.json, report.md and predictions."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import Seq2SeqTrainer

from finetune.data import SourceCount, counts_table
from finetune.metrics import decode, normalizer_for
from finetune.outputs import is_main_process, log, write_json, write_text

METRICS = ["wer", "cer", "wer_ortho", "cer_ortho"]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _predict(trainer: Seq2SeqTrainer, dataset: Dataset) -> tuple[dict[str, float], list[str], list[str]]:
    """Generate on every clip (batched, across all ranks); metrics without the test_ prefix, refs, hyps."""
    out = trainer.predict(dataset, metric_key_prefix="test")
    metrics = {key.removeprefix("test_"): value for key, value in out.metrics.items()}
    tokenizer = trainer.processing_class.tokenizer
    return metrics, decode(tokenizer, out.label_ids), decode(tokenizer, out.predictions)


def score_test_sets(trainer: Seq2SeqTrainer, test: dict[str, Dataset], baseline: bool) -> dict[str, Any]:
    """Per test set: the fine-tuned model's metrics, and the zero-shot base model's (adapter disabled)."""
    results: dict[str, Any] = {}
    for name, dataset in test.items():
        entry: dict[str, Any] = {"utterances": len(dataset), "audio_hours": sum(dataset["duration"]) / 3600}
        if baseline:
            with trainer.model.disable_adapter():
                entry["zero_shot"], refs, base_hyps = _predict(trainer, dataset)
        entry["fine_tuned"], refs, tuned_hyps = _predict(trainer, dataset)
        entry["predictions"] = [
            {"id": i, "ref": ref, "hyp": hyp, **({"hyp_zero_shot": base_hyps[i]} if baseline else {})}
            for i, (ref, hyp) in enumerate(zip(refs, tuned_hyps))
        ]
        results[name] = entry
    return results


def summary_table(results: dict[str, Any]) -> str:
    lines = ["| test set | clips | model | WER | CER | WER ortho | CER ortho | clips/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        for model in ("zero_shot", "fine_tuned"):
            if model in entry:
                m = entry[model]
                cells = " | ".join(f"{m[k]:.2f}" for k in METRICS)
                lines.append(f"| {name} | {entry['utterances']} | {model.replace('_', '-')} | {cells} | "
                             f"{m.get('samples_per_second', float('nan')):.2f} |")
    return "\n".join(lines)


def write_report(output_dir: str, language: str, tokenizer: Any, results: dict[str, Any],
                 training: dict[str, Any], merged: dict[str, Any] | None, counts: list[SourceCount]) -> None:
    """results.json (machine-readable), report.md (people), predictions/<set>.jsonl (per utterance)."""
    if not is_main_process():
        return
    out = Path(output_dir)
    normalizer, _ = normalizer_for(language, tokenizer)
    for name, entry in results.items():
        lines = [json.dumps(p, ensure_ascii=False) for p in entry.pop("predictions")]
        write_text(out / "predictions" / f"{slug(name)}.jsonl", "\n".join(lines) + "\n")
    write_json(out / "results.json", {
        "units": "percent", "normalizer": normalizer, "test_sets": results, "training": training,
        "merged": merged, "data": [{k: v for k, v in asdict(c).items() if k != "dropped_rows"} for c in counts],
    })
    table = summary_table(results)
    parity = (merged or {}).get("parity")
    parity_line = (f"Merged checkpoint `{merged['path']}`: {parity['identical']}/{parity['clips']} transcripts "
                   f"identical to base + adapter." if parity else "No merged checkpoint written.")
    write_text(out / "report.md", "\n\n".join([
        "# Fine-tuning report",
        f"WER/CER in percent; `WER` and `CER` use the {normalizer} normalizer, `ortho` columns the text as written.",
        table,
        f"Training: {training.get('global_step')} steps in {training.get('train_runtime', 0):.0f} s; best "
        f"checkpoint `{training.get('best_checkpoint')}` ({training.get('best_metric')}).",
        parity_line,
        "## Data\n\n" + counts_table(counts),
    ]) + "\n")
    log.info("Test sets, zero-shot vs fine-tuned:\n%s", table)
