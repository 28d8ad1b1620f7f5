"""Adapter strength: the selection rule on fake score tables, the lazy search, exact scaling and baking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tiny import tiny_model, tiny_tokenizer

from finetune.adapter_scale import SCALE_FILE, bake_scale, baked_scale, choose_scale, scaled, search

GUARDS = ["en", "fr"]


def point(scale: float, wer: float, guards: dict[str, tuple[float, bool]] | None = None,
          worse_than: list[float] | None = None) -> dict:
    """A score-table row: in-domain WER, and per guard set (change from strength 0, significantly worse?)."""
    sets = {"eval": {"role": "in-domain", "wer": wer}}
    for name, (delta, significant) in (guards or {}).items():
        sets[name] = {"role": "guard", "wer": 10 + delta, "delta": delta, "significantly_worse": significant}
    return {"scale": scale, "in_domain_wer": wer, "sets": sets, "worse_than": worse_than or []}


NEUTRAL = {"en": (0.0, False), "fr": (0.0, False)}


def test_a_significant_guard_regression_above_the_threshold_blocks_a_strength() -> None:
    table = [point(0.0, 30.0, NEUTRAL, [0.5, 1.0]), point(0.5, 20.0, {"en": (0.5, False), "fr": (0.9, True)}),
             point(1.0, 18.0, {"en": (5.0, True), "fr": (0.0, False)})]
    scale, why, needed = choose_scale(table, GUARDS, threshold=1.0, pick="lowest")
    # 1.0 is best in-domain but English rose 5 points significantly; at 0.5 French rose significantly but by less
    # than the threshold, so 0.5 is allowed.
    assert (scale, needed) == (0.5, []) and "1 (en)" in why


def test_a_large_rise_within_noise_does_not_block() -> None:
    table = [point(0.0, 30.0, NEUTRAL), point(1.0, 18.0, {"en": (5.0, False), "fr": (3.0, False)})]
    assert choose_scale(table, GUARDS, threshold=1.0, pick="lowest")[0] == 1.0


def test_within_noise_ships_the_smallest_strength_not_significantly_worse_than_the_best() -> None:
    table = [point(0.0, 30.0, NEUTRAL, worse_than=[0.5, 0.75, 1.0]), point(0.5, 21.0, NEUTRAL, worse_than=[1.0]),
             point(0.75, 19.0, NEUTRAL), point(1.0, 18.0, NEUTRAL)]
    scale, why, _ = choose_scale(table, GUARDS, threshold=1.0, pick="within_noise")
    assert scale == 0.75 and "smallest not significantly worse" in why
    assert choose_scale(table, GUARDS, threshold=1.0, pick="lowest")[0] == 1.0


def test_ties_go_to_the_smaller_strength_and_strength_zero_always_qualifies() -> None:
    table = [point(0.0, 20.0, NEUTRAL), point(1.0, 20.0, NEUTRAL)]
    assert choose_scale(table, GUARDS, threshold=1.0, pick="lowest")[0] == 0.0
    noisy = [point(0.0, 24.0, NEUTRAL), point(1.0, 20.0, NEUTRAL)]  # better, but not significantly
    scale, why, _ = choose_scale(noisy, GUARDS, threshold=1.0, pick="within_noise")
    assert scale == 0.0 and "the base model ships" in why
    blocked = [point(0.0, 30.0, NEUTRAL), point(1.0, 10.0, {"en": (9.0, True), "fr": (0.0, False)})]
    assert choose_scale(blocked, GUARDS, threshold=1.0, pick="lowest")[0] == 0.0


def test_unscored_guards_are_asked_for_only_where_the_answer_rests_on_them() -> None:
    table = [point(0.0, 30.0, NEUTRAL, [0.5, 0.75, 1.0]), point(0.5, 25.0, worse_than=[0.75]), point(0.75, 17.0),
             point(1.0, 18.0, {"en": (4.0, True), "fr": (0.0, False)})]
    assert choose_scale(table, GUARDS, threshold=1.0, pick="within_noise")[2] == [0.75]
    assert choose_scale(table, [], threshold=1.0, pick="lowest")[0] == 0.75  # no guard sets: nothing to score


def lora_toy() -> torch.nn.Module:
    torch.manual_seed(0)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), LoraConfig(r=2, lora_alpha=4,
                                                                                 target_modules=["0"]))
    torch.nn.init.normal_(model.base_model.model[0].lora_B["default"].weight)  # a trained, non-zero update
    return model


def test_scaled_multiplies_the_update_exactly_and_restores_it() -> None:
    model = lora_toy()
    x = torch.randn(3, 4)
    with model.disable_adapter():
        base = model(x)
    full = model(x)
    with scaled(model, 0.0):
        assert torch.equal(model(x), base)
    with scaled(model, 0.5):
        assert torch.allclose(model(x), base + 0.5 * (full - base), atol=1e-6)
    assert torch.equal(model(x), full)


def scores_from_strength(model: torch.nn.Module, calls: list) -> callable:
    """A fake evaluator: in-domain WER falls with strength, the 'fr' guard set rises steeply above 0.5."""
    layer = model.base_model.model[0]

    def evaluate(_model, name: str, _dataset) -> dict:
        scale = layer.scaling["default"] / (4 / 2)
        calls.append((scale, name))
        errors = round(20 * (1 - scale)) + 2 if name == "eval" else (2 + (30 if name == "fr" and scale > 0.5 else 0))
        rows = [{"errors": errors if i < 20 else 0, "words": 5} for i in range(40)]
        return {"wer": 100 * sum(r["errors"] for r in rows) / 200, "_utterances": rows}

    return evaluate


@pytest.mark.parametrize("pick", ["lowest", "within_noise"])
def test_lazy_search_gives_the_full_answer_with_fewer_passes(pick: str) -> None:
    model = lora_toy()
    answers = {}
    for full in (True, False):
        calls: list = []
        summary = search(scores_from_strength(model, calls), model, ("eval", None), {"en": None, "fr": None},
                         [0.25, 0.5, 0.75, 1.0], threshold=1.0, pick=pick, full=full, samples=300, confidence=0.95)
        answers[full] = (summary["chosen"], len(calls))
    assert answers[True][0] == answers[False][0] == 0.5
    assert answers[False][1] < answers[True][1]


def test_baked_strength_merges_to_base_plus_s_times_delta(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    base = tiny_model(tokenizer)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    torch.manual_seed(1)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "fc1"]))
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    peft.save_pretrained(tmp_path / "adapter")
    full = PeftModel.from_pretrained(tiny_model(tokenizer), tmp_path / "adapter").merge_and_unload().state_dict()
    bake_scale(tmp_path / "adapter", 1.0)
    bake_scale(tmp_path / "adapter", 0.25)  # re-baking starts from the trained alpha, not the last one
    bake_scale(tmp_path / "adapter", 0.5)
    assert baked_scale(tmp_path / "adapter") == 0.5
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["lora_alpha"] == 4.0
    assert json.loads((tmp_path / "adapter" / SCALE_FILE).read_text())["lora_alpha"] == 8
    half = PeftModel.from_pretrained(tiny_model(tokenizer), tmp_path / "adapter").merge_and_unload().state_dict()
    changed = [k for k in base_state if not torch.equal(full[k], base_state[k])]
    assert changed and all("q_proj" in k or "fc1" in k for k in changed)
    for key in base_state:
        assert torch.allclose(half[key], base_state[key] + 0.5 * (full[key] - base_state[key]), atol=1e-6), key


def test_frozen_encoder_guard_sets_run_the_encoder_once(tmp_path: Path, tiny_model_dir: Path,
                                                        corpus_dir: Path) -> None:
    from conftest import tiny_recipe

    from finetune.adapter_scale import adapter_strength
    from finetune.model import find_encoder
    from finetune.pipeline import build_pipeline
    from finetune.recipe import validate

    raw = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run",
                      lora={"rank": 4, "alpha": 8.0, "dropout": 0.0, "encoder": False})
    raw["data"]["test"].append({"path": str(corpus_dir), "split": "validation", "name": "guard", "guard": True,
                                "language": "en"})
    raw["output"]["scale_search"] = "full"
    recipe = validate(raw)
    pipeline = build_pipeline(recipe)  # frozen encoder: eval rows carry cached encoder outputs
    model, processor, data = pipeline.model, pipeline.processor, pipeline.data
    model.save_pretrained(tmp_path / "adapter")
    runs = []
    find_encoder(model).register_forward_hook(lambda *args: runs.append(1))
    strength = adapter_strength(recipe, model, processor, data, tmp_path / "adapter")
    guard_clips = len(data.test["guard"])
    assert len(runs) == -(-guard_clips // recipe.eval.batch_size)  # one encoder pass over the guard set, in all
    assert all("guard" in p["sets"] for p in strength["points"]) and len(strength["points"]) == 5
    assert baked_scale(tmp_path / "adapter") == strength["chosen"]
