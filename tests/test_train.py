"""Training on a tiny model, in-process: only LoRA weights move, merging is exact, and the loss and gradients do
not depend on gradient accumulation or activation checkpointing (the Trainer would scale the loss by the
accumulation steps for a model that ignores num_items_in_batch; reentrant checkpointing fails with LoRA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe
from tiny import tone

from finetune.collator import SpeechCollator
from finetune.data import load_data
from finetune.model import load_model, load_processor
from finetune.pipeline import build_pipeline
from finetune.recipe import validate
from finetune.checkpoints import MARK_FILE, remove_dir
from finetune.run_dir import claim_output_dir
from finetune.train import save_adapter, train


def make_trainer(tmp_path: Path, model_dir: Path, corpus: Path, claim: bool = False, **train):
    recipe = validate(tiny_recipe(model_dir, corpus, tmp_path / "out", train=train))
    pipeline = build_pipeline(recipe, claim_output_dir(recipe) if claim else None)
    return pipeline.trainer, recipe, pipeline.processor


def first_step(tmp_path: Path, model_dir: Path, corpus: Path, **train) -> tuple[float, float]:
    trainer, _, _ = make_trainer(tmp_path, model_dir, corpus, max_steps=1, eval_steps=1, logging_steps=1, **train)
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    return logged["loss"], logged["grad_norm"]


def test_only_lora_weights_change(tmp_path, tiny_model_dir, even_corpus) -> None:
    trainer, _, _ = make_trainer(tmp_path, tiny_model_dir, even_corpus)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    assert all(not after[n].requires_grad for n in base)
    assert all(torch.equal(before[n], after[n]) for n in base), "a base weight changed"
    assert any(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n), "no LoRA weight changed"


def test_merged_model_gives_the_adapter_logits(tmp_path, tiny_model_dir, even_corpus) -> None:
    trainer, _, processor = make_trainer(tmp_path, tiny_model_dir, even_corpus)
    trainer.train()
    model = trainer.model.eval()
    collate = SpeechCollator(processor, model.config.decoder_start_token_id)
    batch = collate([{"waveform": tone(1.2, seed=9), "labels": processor.tokenizer("hola mundo").input_ids}])
    with torch.no_grad():
        adapter_logits = model(**batch).logits
        merged = model.merge_and_unload()
        merged_logits = merged(**batch).logits
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-5)


def test_loss_and_gradients_do_not_change_with_gradient_accumulation(tmp_path, tiny_model_dir, even_corpus) -> None:
    loss_1x4, norm_1x4 = first_step(tmp_path / "a", tiny_model_dir, even_corpus, per_device_train_batch_size=4)
    loss_2x2, norm_2x2 = first_step(tmp_path / "b", tiny_model_dir, even_corpus, per_device_train_batch_size=2,
                                    gradient_accumulation_steps=2)
    assert loss_2x2 == pytest.approx(loss_1x4, rel=1e-4)  # was 2x before model.accepts_loss_kwargs = False
    assert norm_2x2 == pytest.approx(norm_1x4, rel=1e-3)


def test_activation_checkpointing_with_lora_gives_the_same_step(tmp_path, tiny_model_dir, even_corpus) -> None:
    plain = first_step(tmp_path / "a", tiny_model_dir, even_corpus)
    checkpointed = first_step(tmp_path / "b", tiny_model_dir, even_corpus, gradient_checkpointing=True)
    assert checkpointed == pytest.approx(plain, rel=1e-4)


def test_resume_auto_continues_the_last_complete_checkpoint_with_whole_run_metrics(tmp_path, tiny_model_dir,
                                                                                  even_corpus) -> None:
    trainer, recipe, processor = make_trainer(tmp_path, tiny_model_dir, even_corpus, claim=True, max_steps=3,
                                              eval_steps=1, save_total_limit=2)
    first = train(trainer)
    trainer.claim.release()
    out = Path(recipe.output_dir)
    best = Path(trainer.state.best_model_checkpoint).name
    kept = sorted(p.name for p in out.glob("checkpoint-*"))
    assert kept == sorted({best, "checkpoint-3"} | ({"checkpoint-2"} if best == "checkpoint-3" else set()))
    assert all((c / MARK_FILE).is_file() for c in out.glob("checkpoint-*"))
    remove_dir(out / "checkpoint-3")  # as if killed before step 3's checkpoint was complete
    trainer, recipe, _ = make_trainer(tmp_path, tiny_model_dir, even_corpus, claim=True, max_steps=3,
                                      eval_steps=1, save_total_limit=2, resume="auto")
    assert trainer.claim.resume == str(max(out.glob("checkpoint-*")))
    resumed = train(trainer)
    trainer.claim.release()
    assert resumed["global_step"] == 3 and resumed["sessions"] == 2
    assert resumed["train_runtime"] > trainer.claim.prior_seconds > 0
    assert resumed["train_loss"] == pytest.approx(first["train_loss"], rel=0.05)  # the whole run, not 1 step
    adapter = save_adapter(trainer, recipe.output_dir)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not list(adapter.parent.glob(".adapter.tmp-*"))


def test_each_clip_is_generated_in_its_own_language(tmp_path, tiny_model_dir, even_corpus, monkeypatch) -> None:
    trainer, _, processor = make_trainer(tmp_path, tiny_model_dir, even_corpus)
    collate = trainer.data_collator
    rows = [{"waveform": tone(1.0), "labels": processor.tokenizer("hola").input_ids, "language": lang}
            for lang in ("es", "en")]
    seen = {}
    real_generate = trainer.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real_generate(**kwargs)

    monkeypatch.setattr(trainer.model, "generate", spy)
    trainer.prediction_step(trainer.model, collate(rows), prediction_loss_only=False)
    assert seen["language"] == ["es", "en"] and "input_features" in seen
    trainer.prediction_step(trainer.model, collate([{**rows[0]}, {**rows[0]}]), prediction_loss_only=False)
    assert seen["language"] == "es"
    assert trainer.compute_loss(trainer.model, collate(rows)).item() > 0  # `language` never reaches forward()


def test_spec_augment_masks_only_while_training(tiny_model_dir) -> None:
    from finetune.model import set_spec_augment
    from finetune.recipe import AugmentConfig, ModelConfig

    model = load_model(ModelConfig(name=str(tiny_model_dir)))
    set_spec_augment(model, AugmentConfig(spec_augment=True, mask_time_prob=0.5, mask_feature_prob=0.5))
    features = torch.randn(1, 80, 3000)
    decoder = torch.tensor([[model.config.decoder_start_token_id]])
    model.train()
    torch.manual_seed(0)
    first = model(input_features=features, decoder_input_ids=decoder).logits
    second = model(input_features=features, decoder_input_ids=decoder).logits
    assert not torch.allclose(first, second)  # a fresh mask each forward
    model.eval()
    assert torch.equal(model(input_features=features, decoder_input_ids=decoder).logits,
                       model(input_features=features, decoder_input_ids=decoder).logits)


def test_runaway_outputs_are_told_from_finished_ones(tiny_model_dir, corpus_dir) -> None:
    from finetune.model import transcribe_dataset
    from finetune.recipe import DataConfig, ModelConfig

    cfg = ModelConfig(name=str(tiny_model_dir))
    processor = load_processor(cfg)
    data = load_data(DataConfig(train=[{"path": str(corpus_dir), "split": "test"}],
                                eval=[{"path": str(corpus_dir), "split": "test", "max_samples": 2}]), processor)
    eot = processor.tokenizer.eos_token_id

    class Fixed(torch.nn.Module):  # generate() output as Whisper returns it: new tokens, padded with <|endoftext|>
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.config = load_model(cfg).config
            self.generation_config = type("G", (), {"max_new_tokens": 4})()

        def generate(self, input_features, language):
            return torch.tensor([[70, 71, eot, eot], [70, 71, 72, 73]])

    result = transcribe_dataset(Fixed(), processor, data.eval, batch_size=2)
    assert sorted(result.hit_max_length) == [False, True]  # ended at <|endoftext|> vs ran out of budget
