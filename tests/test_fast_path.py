"""The frozen-encoder fast path (cached encoder outputs), bf16 on CPU, and the benchmark's FLOP counting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode
from conftest import ROOT, tiny_recipe
from safetensors.torch import load_file
from tiny import save_tiny_model, tiny_model, tiny_processor

from finetune.collator import ENCODER_COLUMN, SpeechCollator
from finetune.data import load_data
from finetune.encoder_cache import add_encoder_outputs
from finetune.model import load_model, load_processor
from finetune.pipeline import build_pipeline
from finetune.recipe import RecipeError, validate
from finetune.train import save_adapter

DECODER_ONLY = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "encoder": False}


def decoder_only_recipe(tmp_path: Path, model_dir: Path, corpus: Path, name: str, **train):
    steps = {"max_steps": 3, "eval_steps": 3, "logging_steps": 1, **train}
    return validate(tiny_recipe(model_dir, corpus, tmp_path / name, lora=DECODER_ONLY, train=steps))


def train_run(recipe):
    """Train as finetune/run.py does (step 6); the log history and the saved adapter's tensors."""
    pipeline = build_pipeline(recipe)
    trainer, data = pipeline.trainer, pipeline.data
    trainer.train()
    adapter = save_adapter(trainer, recipe.output_dir)
    # Timings differ, and the Trainer estimates total_flos from input_features (absent on the cached path).
    history = [{k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k and k != "total_flos"}
               for entry in trainer.state.log_history]
    return history, load_file(adapter / "adapter_model.safetensors"), data


def test_cached_encoder_path_trains_exactly_like_the_full_path(tmp_path, tiny_model_dir, corpus_dir) -> None:
    full = decoder_only_recipe(tmp_path, tiny_model_dir, corpus_dir, "full", cache_encoder=False)
    cached = decoder_only_recipe(tmp_path, tiny_model_dir, corpus_dir, "cached", cache_encoder=True)
    assert not full.uses_encoder_cache() and cached.uses_encoder_cache()
    full_history, full_adapter, full_data = train_run(full)
    cached_history, cached_adapter, cached_data = train_run(cached)
    assert "waveform" in full_data.train.column_names  # audio kept; log-mel computed per batch
    assert ENCODER_COLUMN in cached_data.train.column_names and "input_features" not in cached_data.train.column_names
    assert ENCODER_COLUMN in cached_data.eval.column_names  # evaluation reuses it too
    # Same losses, gradient norms, eval loss and eval WER at every logged step, and the same adapter, bit for bit.
    assert cached_history == full_history
    assert any("eval_wer" in entry for entry in cached_history)
    assert full_adapter.keys() == cached_adapter.keys()
    assert all(torch.equal(full_adapter[k], cached_adapter[k]) for k in full_adapter)
    assert not any(".encoder." in k for k in cached_adapter) and any(".decoder." in k for k in cached_adapter)


def test_encoder_cache_is_reused_and_invalidated(tmp_path, tiny_model_dir, corpus_dir) -> None:
    recipe = decoder_only_recipe(tmp_path, tiny_model_dir, corpus_dir, "out")
    processor = load_processor(recipe.model)
    dataset = load_data(recipe.data, processor).eval
    collate = SpeechCollator(processor, 0)
    model = load_model(recipe.model)
    first = add_encoder_outputs(dataset, model, collate, torch.device("cpu"), "fp32")
    again = add_encoder_outputs(dataset, load_model(recipe.model), collate, torch.device("cpu"), "fp32")
    assert again._fingerprint == first._fingerprint and again.cache_files == first.cache_files  # reused from disk
    bf16 = add_encoder_outputs(dataset, model, collate, torch.device("cpu"), "bf16")
    other = load_model(recipe.model.model_copy(update={"name": str(save_tiny_model(tmp_path / "other", seed=1))}))
    changed = add_encoder_outputs(dataset, other, collate, torch.device("cpu"), "fp32")
    assert len({first._fingerprint, bf16._fingerprint, changed._fingerprint}) == 3  # precision, weights
    hidden = torch.tensor(first[0][ENCODER_COLUMN])
    with torch.no_grad():
        expected = model.get_encoder()(collate.features([dataset[0]])).last_hidden_state[0]
    assert torch.equal(hidden, expected)
    assert not torch.equal(torch.tensor(changed[0][ENCODER_COLUMN]), hidden)


def test_recipe_says_which_path_runs_and_why(tmp_path, tiny_model_dir, corpus_dir) -> None:
    base = tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "out")
    assert not validate(base).uses_encoder_cache()  # LoRA in the encoder by default
    assert "lora.encoder=true" in validate(base).encoder_cache_blockers()[0]
    decoder = {**base, "lora": {**base["lora"], "encoder": False}}
    assert validate(decoder).uses_encoder_cache()  # auto
    assert not validate({**decoder, "train": {**base["train"], "cache_encoder": False}}).uses_encoder_cache()
    with pytest.raises(RecipeError) as info:
        validate({**decoder, "train": {**base["train"], "cache_encoder": True},
                  "augment": {"spec_augment": True, "noise_prob": 0.5}})
    message = str(info.value)
    assert "train.cache_encoder=true" in message and "spec_augment" in message and "noise_prob" in message
    spec = {**decoder, "augment": {"spec_augment": True}}
    assert not validate(spec).uses_encoder_cache()  # auto falls back to the full path


def test_bf16_trains_on_cpu_close_to_fp32(tmp_path, tiny_model_dir, even_corpus) -> None:
    losses = {}
    for precision in ("fp32", "bf16"):
        recipe = validate(tiny_recipe(tiny_model_dir, even_corpus, tmp_path / precision, train={
            "max_steps": 1, "eval_steps": 1, "logging_steps": 1, "bf16": precision == "bf16"}))
        pipeline = build_pipeline(recipe)
        trainer, model = pipeline.trainer, pipeline.model
        seen = []
        hook = model.get_base_model().model.decoder.layers[0].fc1.register_forward_hook(
            lambda module, inputs, output: seen.append(output.dtype))
        trainer.train()
        hook.remove()
        losses[precision] = next(e["loss"] for e in trainer.state.log_history if "loss" in e)
        assert seen and set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_flop_count_covers_cpu_attention() -> None:
    """sdpa on CPU runs a kernel FlopCounterMode has no formula for; with ours its forward counts what eager
    attention (plain bmm) counts, and its backward is counted too (the flash backward also recomputes the
    attention scores: half a forward more than eager's)."""
    from finetune.speed import CPU_ATTENTION_FLOPS

    processor = tiny_processor()
    counts = {}
    for attn in ("eager", "sdpa"):
        for backward in (False, True):
            model = tiny_model(processor.tokenizer)
            model.config._attn_implementation = attn
            counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
            with counter:
                loss = model(input_features=torch.randn(2, 80, 3000), labels=torch.randint(0, 200, (2, 12))).loss
                if backward:
                    loss.backward()
            counts[attn, backward] = counter.get_flop_counts()["Global"]
    forward_attention = counts["eager", False][torch.ops.aten.bmm]
    assert sum(counts["sdpa", False].values()) == sum(counts["eager", False].values())
    assert counts["sdpa", False][torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] == forward_attention
    assert sum(counts["sdpa", True].values()) == sum(counts["eager", True].values()) + forward_attention // 2


@pytest.mark.slow
def test_benchmark_compare_writes_json_and_markdown(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "unused")))
    output = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), str(recipe), "--compare",
                           "--variants", "fp32-full,fp32-cached", "--steps", "2", "--eval-clips", "2",
                           "--train-rows", "8", "--output", str(output)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    full, cached = result["variants"]
    assert (full["variant"], cached["variant"]) == ("fp32-full", "fp32-cached")
    assert full["path"] == "full encoder+decoder LoRA" and cached["path"].startswith("decoder-only, cached")
    assert cached["encoder_cache_s"] > 0 and full["encoder_cache_s"] is None
    # The cached step skips the encoder's forward: far fewer FLOPs per sample (a count, not a timing).
    assert 0 < cached["train"]["flops_per_sample"] < full["train"]["flops_per_sample"] / 2
    assert result["matmul_peak_gflops"]["fp32"] > 0 and 0 < full["train"]["share_of_peak"]
    table = output.with_suffix(".md").read_text()
    assert "| fp32-full |" in table and "| fp32-cached |" in table and "GFLOP/s" in table
