"""Beyond one process: the shipped accelerate configs load the way accelerate reads them; the DDP and FSDP configs
run on two CPU ranks (gloo) to an adapter, a merged model and a report; a DDP run killed mid-training resumes."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe
from runs import CONFIGS, MODULE, ROOT, launcher, run_cli

from finetune.cli import main

KINDS = {"ddp.yaml": "MULTI_GPU", "cpu-ddp.yaml": "MULTI_GPU", "two-node.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP",
         "deepspeed-zero2.yaml": "DEEPSPEED", "deepspeed-zero3.yaml": "DEEPSPEED"}
# DeepSpeed settings the Trainer fills from the recipe ("auto"): a number there could contradict the recipe.
TRAINER_OWNED = ["train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                 "gradient_clipping"]


def launch_env(config: Path, monkeypatch) -> dict[str, str]:
    """The environment `accelerate launch --config_file CONFIG` gives each process, set here as it would be."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "finetune", "train", "r.yaml"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_the_shipped_configs_are_the_ones_documented() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(KINDS)
    readme = (ROOT / "README.md").read_text()
    for name in KINDS:
        assert f"recipes/accelerate/{name}" in readme, f"README's Scaling out does not show {name}"


@pytest.mark.parametrize("name", sorted(KINDS))
def test_config_loads_in_accelerate_and_says_when_and_how(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    path = CONFIGS / name
    config = load_config_from_file(str(path))
    assert str(config.distributed_type).endswith(KINDS[name])
    header = path.read_text().split("compute_environment")[0]
    assert "Use it" in header or "For tests" in header, "the header says when to use it"
    assert f"accelerate launch --config_file recipes/accelerate/{name}" in header and "-m finetune train" in header


def test_fsdp_config_builds_accelerates_fsdp_plugin_for_whisper_lora(monkeypatch) -> None:
    """What each rank's accelerate makes of fsdp.yaml: full sharding, a full state dict when saving (the adapter
    is gathered whole), flat parameters as peft asks, and wrap classes that exist in Whisper."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers.models.whisper import modeling_whisper

    env = launch_env(CONFIGS / "fsdp.yaml", monkeypatch)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    plugin = FullyShardedDataParallelPlugin()
    assert "FULL_SHARD" in str(plugin.sharding_strategy) and "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert plugin.use_orig_params is False and plugin.sync_module_states is False
    assert all(hasattr(modeling_whisper, cls) for cls in plugin.transformer_cls_names_to_wrap)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_validate(stage: int, tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    launch = load_config_from_file(str(CONFIGS / f"deepspeed-zero{stage}.yaml"))
    ds_file = ROOT / launch.deepspeed_config["deepspeed_config_file"]
    ds = HfDeepSpeedConfig(str(ds_file))
    assert ds.get_value("zero_optimization.stage") == stage and ds.is_zero3() == (stage == 3)
    assert all(ds.get_value(key) == "auto" for key in TRAINER_OWNED)
    if stage == 3:  # the adapter is gathered whole when saved
        assert ds.get_value("zero_optimization.stage3_gather_16bit_weights_on_model_save") is True
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (it needs GPUs to run): the Trainer's own filling of the 'auto' "
                    "values is checked where it is")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from finetune.recipe import validate
    from finetune.train import trainer_arguments

    trainer_config = HfTrainerDeepSpeedConfig(str(ds_file))
    recipe = validate(tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run"))
    trainer_config.trainer_config_process(trainer_arguments(recipe))
    assert trainer_config.get_value("train_micro_batch_size_per_gpu") == recipe.train.per_device_train_batch_size


def test_a_deepspeed_launch_without_deepspeed_is_one_clear_error(tmp_path: Path, tiny_model_dir: Path,
                                                                corpus_dir: Path, monkeypatch, capsys) -> None:
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here: nothing is missing")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_model_dir, corpus_dir, tmp_path / "run")))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what the launcher sets for deepspeed-zero*.yaml
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(CONFIGS / "ds-zero2.json"))
    assert main(["check", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "accelerate config" in err and "asks for DeepSpeed" in err and "pip install deepspeed" in err


@pytest.mark.slow
def test_fsdp_config_on_two_cpu_ranks_ends_in_adapter_merged_model_and_report(tmp_path: Path, tiny_model_dir: Path,
                                                                               corpus_dir: Path) -> None:
    """accelerate applies FSDP on GPUs only: on CPU ranks the run is plain DDP, says so once, and finishes."""
    out = tmp_path / "run"
    done = run_cli(tiny_recipe(tiny_model_dir, corpus_dir, out), tmp_path, launcher=launcher("fsdp.yaml"),
                   entry=MODULE)
    assert done.stderr.count("The accelerate config asks for FSDP, but this run is DistributedType.MULTI_CPU") == 1
    for name in ["adapter/adapter_model.safetensors", "merged/model.safetensors", "report.json"]:
        assert (out / name).is_file(), name
    assert not (out / "adapter" / "training_args.bin").exists()
    assert json.loads((out / "environment.json").read_text())["world_size"] == 2
    from finetune.model import load_model
    from finetune.recipe import ModelConfig

    assert load_model(ModelConfig(name=str(tiny_model_dir)), out / "adapter").peft_config["default"].r == 4


@pytest.mark.slow
def test_ddp_run_killed_mid_training_resumes_on_two_ranks(tmp_path: Path, tiny_model_dir: Path,
                                                          corpus_dir: Path) -> None:
    out = tmp_path / "run"
    recipe = tiny_recipe(tiny_model_dir, corpus_dir, out, train={"max_steps": 3, "eval_steps": 1,
                                                                 "logging_steps": 1, "per_device_train_batch_size": 2})
    killed = run_cli(recipe, tmp_path, launcher=launcher("ddp.yaml"), entry=[str(ROOT / "tests" / "fault_run.py")],
                     env={"FAULT": "train:3"}, check=False)  # each rank dies in its third step
    assert killed.returncode != 0 and "FAULT: kill -9 at train call 3" in killed.stderr
    assert (out / "checkpoint-2").is_dir() and not (out / "report.json").exists()
    run_cli(recipe, tmp_path, "train.resume=auto", launcher=launcher("ddp.yaml"), entry=MODULE)
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["global_step"] == 3 and report["training"]["sessions"] == 2
    assert report["training"]["resumed_from"].endswith("checkpoint-2")
    assert os.path.isfile(out / "merged" / "model.safetensors")


def _lora_model(seed: int = 0):
    """The tiny Whisper with LoRA as finetune builds it (dropout off), its B matrices random so both A and B train."""
    import torch
    from tiny import tiny_model, tiny_processor

    from finetune.model import add_lora
    from finetune.recipe import LoraConfig

    torch.manual_seed(seed)
    model = add_lora(tiny_model(tiny_processor().tokenizer), LoraConfig(rank=4, dropout=0.0), seed=seed)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    return model


def _batch():
    import torch

    generator = torch.Generator().manual_seed(1)  # equal label lengths: the mean over ranks is the mean over all
    return torch.randn(4, 80, 3000, generator=generator), torch.randint(0, 200, (4, 6), generator=generator)


def _step(model, features, labels):
    """One SGD step of the mean token loss; returns the loss."""
    import torch

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model(input_features=features, labels=labels).loss
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _fsdp_rank(rank: int, world: int, port: int, out: str, policy: bool) -> None:
    """One gloo rank: FSDP as fsdp.yaml configures it (FULL_SHARD, flat parameters, peft's wrap policy), one
    step on its half of the batch, the full state dict gathered (on every rank: rank-0-only gathering fails on CPU
    tensors), as the adapter is when saved."""
    import torch
    import torch.distributed as dist
    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _lora_model()
        kwargs = {"auto_wrap_policy": fsdp_auto_wrap_policy(model)} if policy else {}
        try:
            wrapped = FSDP(model, device_id=torch.device("cpu"), use_orig_params=False, **kwargs)
        except ValueError as err:
            if rank == 0:
                torch.save({"error": str(err)}, out)
            return
        features, labels = _batch()
        half = slice(rank * 2, rank * 2 + 2)
        loss = torch.tensor(_step(wrapped, features[half], labels[half]))
        dist.all_reduce(loss)
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT,
                                  FullStateDictConfig(offload_to_cpu=False, rank0_only=False)):
            state = wrapped.state_dict()
        if rank == 0:
            torch.save({"loss": float(loss) / world, "adapter": {k: v for k, v in state.items() if "lora_" in k}}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_torch_fsdp_on_two_gloo_ranks_trains_whisper_lora_like_one_process(tmp_path: Path) -> None:
    """The FSDP layout fsdp.yaml asks for, run by torch itself on CPU ranks (accelerate applies FSDP on GPUs only):
    without peft's wrap policy it fails as documented; with it, one step on 2 ranks gives the loss and the
    gathered adapter of one process on the whole batch."""
    import torch
    import torch.multiprocessing as mp
    from runs import free_port

    results = {}
    for policy in (False, True):
        out = tmp_path / f"policy-{policy}.pt"
        mp.spawn(_fsdp_rank, args=(2, free_port(), str(out), policy), nprocs=2)
        results[policy] = torch.load(out)
    assert "Must flatten tensors with uniform `requires_grad`" in results[False]["error"]
    single = _lora_model()
    loss = _step(single, *_batch())
    assert results[True]["loss"] == pytest.approx(loss, rel=1e-5)
    expected = {k: v for k, v in single.state_dict().items() if "lora_" in k}
    assert results[True]["adapter"].keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.allclose(results[True]["adapter"][name], tensor, atol=1e-6), name


def test_gpu_check_script_parses() -> None:
    """scripts/gpu_check.sh runs only where a GPU is (none here): at least it must be valid bash."""
    import subprocess

    parsed = subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr


@pytest.mark.slow
def test_two_node_config_on_one_host_two_machines_of_one_rank(tmp_path: Path, tiny_model_dir: Path,
                                                               corpus_dir: Path) -> None:
    """two-node.yaml as written, with both "machines" on this host (machine_rank 0 and 1, one CPU rank each,
    rendezvous at 127.0.0.1): the run ends in an adapter, a merged model and a report, with world size 2."""
    import subprocess
    import sys

    from runs import free_port

    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_model_dir, corpus_dir, out)))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    nodes = [subprocess.Popen([sys.executable, *launcher("two-node.yaml"), "--num_machines", "2", "--machine_rank",
                               str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                               *MODULE, str(recipe)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for rank in (0, 1)]
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, results):
        assert node.returncode == 0, err[-4000:]
    assert json.loads((out / "environment.json").read_text())["world_size"] == 2
    for name in ["adapter/adapter_model.safetensors", "merged/model.safetensors", "report.json"]:
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_packed_windows_train_on_two_ranks(tmp_path: Path, timestamp_model_dir: Path, corpus_dir: Path) -> None:
    """Packed windows under DDP (each rank plans them from seed and epoch, the sampler splits them): two epochs,
    the plan redrawn for the second by the epoch callback, to the end. Equality with one process is not checked:
    windows carry unequal token counts, so the mean over ranks is not the mean over all tokens."""
    out = tmp_path / "run"
    recipe = tiny_recipe(timestamp_model_dir, corpus_dir, out, train={"num_train_epochs": 2, "max_steps": -1,
                                                                      "per_device_train_batch_size": 1,
                                                                      "eval_steps": 1, "logging_steps": 1})
    recipe["data"]["windows"] = {"mode": "packed", "max_window_s": 4.0}
    done = run_cli(recipe, tmp_path, launcher=launcher(), entry=MODULE)
    assert "Training windows (packed)" in done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["global_step"] >= 2 and (out / "merged" / "model.safetensors").is_file()
    assert json.loads((out / "environment.json").read_text())["world_size"] == 2
