"""Guard-aware adapter strength: score the trained adapter at several strengths, keep the best safe one.

A LoRA adapter adds `scale x (alpha / rank) x B A` to each weight it targets, so multiplying its scaling by s
gives exactly the model W + s x delta: s = 0 is the base model, s = 1 the model as trained (WiSE-FT-style
interpolation between zero-shot and fine-tuned, exact for LoRA; with DoRA the scale multiplies the low-rank update
inside DoRA's normalization, which is close but not a straight line). After training, every strength of the grid is
scored on the eval set (in-domain) and on every guard set. A strength is allowed when no guard set is worse than at
s = 0 by more than `eval.guard_threshold` points AND significantly (paired bootstrap); s = 0 always is, so the rule
can always answer. Among the allowed ones, `output.scale_pick: lowest` ships the lowest in-domain WER and
`within_noise` the smallest strength whose in-domain WER is not significantly worse than that lowest one (the same
measured gain with the least change to the base model). The chosen strength is baked into the saved adapter's
`lora_alpha` (plain peft then loads it at that strength) and into the merged checkpoint.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import Dataset
from peft.tuners.lora import LoraLayer

from finetune.collator import SpeechCollator
from finetune.data import PreparedData
from finetune.encoder_cache import add_encoder_outputs
from finetune.model import precision_context
from finetune.outputs import log, write_json
from finetune.recipe import Recipe
from finetune.scoring import evaluate_model, set_normalizer
from finetune.significance import compare_rows, interval_of

SCALE_FILE = "adapter_scale.json"  # <adapter dir>/adapter_scale.json: the strength baked into lora_alpha


@contextlib.contextmanager
def scaled(peft_model: torch.nn.Module, scale: float) -> Iterator[torch.nn.Module]:
    """The model with every LoRA update multiplied by `scale` for the duration; restored afterwards."""
    saved = []
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            saved.append((module, dict(module.scaling)))
            for name in module.scaling:
                module.scaling[name] = module.scaling[name] * scale
    try:
        yield peft_model
    finally:
        for module, scaling in saved:
            module.scaling.update(scaling)


def score_table(results: dict[float, dict[str, dict[str, Any]]], in_domain: str, guards: list[str],
                samples: int, confidence: float) -> list[dict[str, Any]]:
    """One point per strength: each scored set's WER with its interval; for guard sets the paired difference from
    strength 0 (the base model); `worse_than`: the strengths whose in-domain WER is significantly lower."""
    points = []
    base = results[0.0]
    for scale, by_set in sorted(results.items()):
        point: dict[str, Any] = {"scale": scale, "in_domain_wer": by_set[in_domain]["wer"], "sets": {}}
        for name, result in by_set.items():
            interval = interval_of(result["_utterances"], samples, confidence=confidence)
            entry = {"role": "guard" if name in guards else "in-domain", "wer": result["wer"],
                     "low": interval.low, "high": interval.high}
            if name in guards:
                paired = compare_rows(base[name]["_utterances"], result["_utterances"], samples,
                                      confidence=confidence)
                entry.update(delta=paired.delta, p_value=paired.p_value, significantly_worse=paired.worse)
            point["sets"][name] = entry
        point["worse_than"] = [other for other, theirs in sorted(results.items()) if other != scale and compare_rows(
            theirs[in_domain]["_utterances"], by_set[in_domain]["_utterances"], samples, confidence=confidence).worse]
        points.append(point)
    return points


def _blocked(point: dict[str, Any], guards: list[str], threshold: float) -> list[str]:
    return [name for name in guards if name in point["sets"] and point["sets"][name]["delta"] > threshold
            and point["sets"][name]["significantly_worse"]]


def choose_scale(points: list[dict[str, Any]], guards: list[str], threshold: float,
                 pick: str = "within_noise") -> tuple[float, str, list[float]]:
    """(strength to ship, why, strengths whose guard sets must still be scored before the answer is final).

    A strength is blocked when a guard set rose by more than `threshold` points and significantly. Among the others,
    `lowest` takes the lowest in-domain WER, `within_noise` the smallest strength whose in-domain WER is not
    significantly worse than that lowest one. Ties go to the smaller strength (closer to the base model). A strength
    whose guard sets were not scored yet counts as allowed, and is returned in the third item if the answer rests on
    it, so a lazy search scores exactly what the full one would need.
    """
    allowed = [p for p in points if not _blocked(p, guards, threshold)]
    if not allowed:  # strength 0 is never blocked (its difference from itself is 0)
        raise ValueError("no adapter strength keeps the guard sets; the table lacks strength 0")
    best = min(allowed, key=lambda p: (round(p["in_domain_wer"], 6), p["scale"]))
    choice = best if pick == "lowest" else \
        min((p for p in allowed if best["scale"] not in p["worse_than"]), key=lambda p: p["scale"])
    needed = sorted({p["scale"] for p in (best, choice) if any(g not in p["sets"] for g in guards)})
    rejected = [f"{p['scale']:g} ({', '.join(_blocked(p, guards, threshold))})" for p in points
                if _blocked(p, guards, threshold)]
    why = f"lowest in-domain WER {best['in_domain_wer']:.2f} at strength {best['scale']:g}"
    if choice is not best:
        why += (f"; strength {choice['scale']:g} ({choice['in_domain_wer']:.2f}) is the smallest not significantly "
                "worse in-domain, so it ships: the same measured gain with less change to the base model")
    if choice["scale"] == 0.0 and best["scale"] != 0.0:
        why += (" (here: no strength is significantly better in-domain than the base model, so the base model ships;"
                " score more eval clips, or set output.scale_pick=lowest to ship the lowest WER anyway)")
    why += (f"; rejected for a significant guard-set regression: {'; '.join(rejected)}" if rejected
            else "; no strength made a guard set significantly worse" if guards else "; no guard sets to check")
    return choice["scale"], why, needed


def search(evaluate: Callable[[torch.nn.Module, str, Dataset], dict[str, Any]], peft_model: torch.nn.Module,
           in_domain: tuple[str, Dataset], guards: dict[str, Dataset], grid: list[float], threshold: float,
           pick: str, full: bool, samples: int, confidence: float) -> dict[str, Any]:
    """Score the grid and choose. In-domain at every strength; guard sets at 0 and 1 (lazy) or everywhere (full),
    then wherever choose_scale says the answer depends on them. Returns the summary for the report plus `results`
    (full evaluation results by strength and set, per-utterance rows included)."""
    grid = sorted(set(grid) | {0.0})
    results: dict[float, dict[str, dict[str, Any]]] = {scale: {} for scale in grid}

    def score(scale: float, names: list[str]) -> None:
        with scaled(peft_model, scale) as model:
            for name in names:
                dataset = in_domain[1] if name == in_domain[0] else guards[name]
                results[scale][name] = evaluate(model, name, dataset)
        log.info("Adapter strength %g: %s", scale, ", ".join(f"{n} WER {results[scale][n]['wer']:.2f}" for n in names))

    for scale in grid:
        score(scale, [in_domain[0]] + (list(guards) if full or scale in (0.0, 1.0) else []))
    while True:
        points = score_table(results, in_domain[0], list(guards), samples, confidence)
        chosen, why, needed = choose_scale(points, list(guards), threshold, pick)
        if not needed:
            break
        for scale in needed:
            score(scale, list(guards))
    log.info("Adapter strength %g chosen: %s", chosen, why)
    return {"mode": "auto", "chosen": chosen, "reason": why, "pick": pick, "in_domain_set": in_domain[0],
            "guards": list(guards), "grid": grid, "points": points, "results": results}


def bake_scale(adapter_dir: str | Path, scale: float) -> None:
    """Write `scale` into a saved adapter: lora_alpha (and any per-module alpha) times scale, so peft, the merged
    checkpoint and the Hub copy all give W + scale x delta. Idempotent: scales relative to the as-trained alpha."""
    adapter_dir = Path(adapter_dir)
    config_path, record_path = adapter_dir / "adapter_config.json", adapter_dir / SCALE_FILE
    config = json.loads(config_path.read_text())
    previous = json.loads(record_path.read_text()) if record_path.is_file() else {"scale": 1.0,
                                                                                   "lora_alpha": config["lora_alpha"]}
    trained_alpha = previous["lora_alpha"]
    factor = scale / previous["scale"] if previous["scale"] else None
    config["lora_alpha"] = trained_alpha * scale
    if config.get("alpha_pattern"):
        if factor is None:
            raise ValueError(f"{adapter_dir}: per-module alphas were baked at strength 0 and cannot be rescaled")
        config["alpha_pattern"] = {k: v * factor for k, v in config["alpha_pattern"].items()}
    write_json(config_path, config)
    write_json(record_path, {"scale": scale, "lora_alpha": trained_alpha,
                             "note": "lora_alpha = trained lora_alpha x scale (finetune's adapter strength)"})


def baked_scale(adapter_dir: str | Path) -> float:
    """The strength baked into a saved adapter (1.0 when none was)."""
    record = Path(adapter_dir) / SCALE_FILE
    return float(json.loads(record.read_text())["scale"]) if record.is_file() else 1.0


def adapter_strength(recipe: Recipe, peft_model: torch.nn.Module, processor: Any, data: PreparedData,
                     adapter_dir: str | Path) -> dict[str, Any]:
    """Choose the strength (output.adapter_scale: auto) or take the recipe's; bake it into the saved adapter.

    `data.eval` may hold cached encoder outputs (frozen-encoder fast path); guard sets then get theirs computed
    once too, since the encoder has no adapters and its output is the same at every strength.
    """
    cfg = recipe.output
    if cfg.adapter_scale != "auto":
        strength: dict[str, Any] = {"mode": "fixed", "chosen": float(cfg.adapter_scale)}
    else:
        sources = {src.label: src for src in recipe.data.test_sets if src.guard}
        guards = {name: data.test[name] for name in sources if name in data.test}
        device = next(peft_model.parameters()).device
        if not recipe.lora.encoder:
            collate = SpeechCollator(processor, peft_model.config.decoder_start_token_id)
            guards = {name: add_encoder_outputs(ds, peft_model, collate, device, recipe.eval_precision,
                                                recipe.eval.batch_size) for name, ds in guards.items()}
        in_domain = "eval: " + ", ".join(src.label for src in recipe.data.eval)
        normalizers = {name: set_normalizer(sources.get(name), recipe.model.language, processor.tokenizer)[1]
                       for name in [in_domain, *guards]}

        def evaluate(model: torch.nn.Module, name: str, dataset: Dataset) -> dict[str, Any]:
            return evaluate_model(model, processor, dataset, recipe.eval, normalizers[name])

        with precision_context(device.type, recipe.eval_precision):
            strength = search(evaluate, peft_model, (in_domain, data.eval), guards, cfg.scale_grid,
                              recipe.eval.guard_threshold, cfg.scale_pick, cfg.scale_search == "full",
                              recipe.eval.bootstrap_samples, recipe.eval.confidence)
    bake_scale(adapter_dir, strength["chosen"])
    return strength
