"""Publishing to the Hugging Face Hub: what a published repo holds (the staged folder and its model card), the
upload with retries, and the end-of-run push."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError

from finetune.hub_probe import is_local
from finetune.outputs import log, slug
from finetune.recipe import HubConfig, Recipe, RecipeError, dump

CARD_TAGS = ["whisper", "automatic-speech-recognition", "lora", "peft", "finetune"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def eval_results(report: dict[str, Any], sources: dict[str, Any]) -> list[EvalResult]:
    """model-index entries: WER and CER of the fine-tuned and the zero-shot model on every test set."""
    results = []
    for name, entry in report.get("sets", {}).items():
        src = sources.get(name)
        dataset = {"dataset_type": (src.hub if src and src.hub else slug(name).lower()), "dataset_name": name,
                   "dataset_config": src.config if src else None, "dataset_split": src.split if src else None}
        for model, label in (("fine_tuned", "fine-tuned"), ("zero_shot", "zero-shot base")):
            for metric in ("wer", "cer"):
                if model in entry:
                    results.append(EvalResult(
                        task_type="automatic-speech-recognition", task_name="Automatic Speech Recognition",
                        metric_type=metric, metric_value=round(entry[model][metric], 2),
                        metric_name=f"{metric.upper()} ({label}, normalized, %)", **dataset))
    return results


def model_card(recipe: Recipe, report: dict[str, Any], kind: str, repo_id: str | None) -> str:
    """README.md for the Hub repo: metadata (base model, language, datasets, model-index) and a readable body."""
    name = (repo_id or Path(recipe.output_dir).name).split("/")[-1]
    where = repo_id or name
    sources = {src.label: src for src in recipe.data.test_sets}
    datasets = sorted({src.hub for src in recipe.data.train + recipe.data.eval + recipe.data.test_sets if src.hub})
    languages = sorted({recipe.model.language} | {s.language for s in recipe.data.train if s.language})
    data = ModelCardData(
        base_model=recipe.model.name if not is_local(recipe.model.name) else None, model_name=name,
        library_name="peft" if kind == "adapter" else "transformers", language=languages,
        datasets=datasets or None, license=recipe.hub.license, tags=CARD_TAGS,
        pipeline_tag="automatic-speech-recognition", eval_results=eval_results(report, sources) or None,
    )
    rows = [f"| {n} | {e['utterances']} | {e.get('zero_shot', {}).get('wer', float('nan')):.2f} | "
            f"{e['fine_tuned']['wer']:.2f} | {e.get('zero_shot', {}).get('cer', float('nan')):.2f} | "
            f"{e['fine_tuned']['cer']:.2f} |" for n, e in report.get("sets", {}).items()]
    train = recipe.train
    usage = ("from peft import PeftModel\n"
             "from transformers import WhisperForConditionalGeneration, WhisperProcessor\n\n"
             f'base = WhisperForConditionalGeneration.from_pretrained("{recipe.model.name}")\n'
             f'model = PeftModel.from_pretrained(base, "{where}")\n'
             f'processor = WhisperProcessor.from_pretrained("{where}")'
             if kind == "adapter" else
             "from transformers import pipeline\n\n"
             f'asr = pipeline("automatic-speech-recognition", model="{where}")\n'
             'print(asr("clip.flac")["text"])')
    body = "\n\n".join([
        f"# {name}",
        f"{'LoRA adapter for' if kind == 'adapter' else 'Merged fine-tune of'} `{recipe.model.name}`, "
        f"language `{recipe.model.language}`, task `{recipe.model.task}`, trained with finetune.",
        "## Results\n\nWord and character error rates in percent after Whisper's normalizer; zero-shot = the base "
        "model without the adapter, same decoding.\n\n| test set | clips | WER zero-shot | WER fine-tuned | "
        "CER zero-shot | CER fine-tuned |\n|---|---|---|---|---|---|\n" + "\n".join(rows),
        f"## Training\n\nLoRA rank {recipe.lora.rank}, alpha {recipe.lora.alpha:g}, dropout {recipe.lora.dropout:g}, "
        f"modules {', '.join(recipe.lora.target_modules)}; learning rate {train.learning_rate:g}, "
        f"{train.max_steps if train.max_steps > 0 else f'{train.num_train_epochs:g} epochs'}"
        f"{' steps' if train.max_steps > 0 else ''}, batch {train.per_device_train_batch_size} x "
        f"{train.gradient_accumulation_steps} accumulation per device, "
        f"{'bf16' if train.bf16 else 'fp16' if train.fp16 else 'fp32'}, seed {train.seed}.",
        f"## Usage\n\n```python\n{usage}\n```",
        "## Recipe\n\n```yaml\n" + dump(recipe).rstrip() + "\n```",
    ])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n").content


def stage(run_dir: str | Path, recipe: Recipe, kind: str, folder: str | Path,
          repo_id: str | None) -> list[tuple[str, int]]:
    """Copy what one repo gets into `folder` (emptied first): the adapter (peft format) or the merged checkpoint,
    the processor files, the generation config, and the model card. Returns (file, bytes) for each file."""
    run_dir, folder = Path(run_dir), Path(folder)
    source = run_dir / ("adapter" if kind == "adapter" else "merged")
    needed = ADAPTER_FILES if kind == "adapter" else ("config.json", "generation_config.json", "model.safetensors")
    missing = [f for f in needed if not (source / f).is_file()]
    if missing:
        raise RecipeError("hub", [f"{source} lacks {missing}: is {run_dir} a finished run?"])
    shutil.rmtree(folder, ignore_errors=True)  # nothing left over from an earlier staging goes up
    folder.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name != "README.md":
            shutil.copy2(path, folder / path.name)
    if kind == "adapter" and (run_dir / "merged" / "generation_config.json").is_file():
        shutil.copy2(run_dir / "merged" / "generation_config.json", folder / "generation_config.json")
    report_path = run_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    (folder / "README.md").write_text(model_card(recipe, report, kind, repo_id), encoding="utf-8")
    return sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())


RETRIES = 4  # network failures: tried again after 2, 4, 8 s


def upload(folder: Path, repo_id: str, private: bool, revision: str | None, message: str) -> str:
    """Create (or reuse) the repo and commit the folder; clear errors for 401/403, backoff on network errors."""
    api = HfApi()
    for attempt in range(RETRIES):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return str(api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                         commit_message=message))
        except HfHubHTTPError as err:
            status = getattr(err.response, "status_code", None)
            if status == 401:
                raise RecipeError("hub", ["401 Unauthorized: no valid token. Log in with `hf auth login` or set "
                                          "HF_TOKEN to a token with write access"]) from None
            if status == 403:
                raise RecipeError("hub", [f"403 Forbidden: the token may not write to {repo_id!r}. Use a token with "
                                          "write access to that user or organization"]) from None
            if status is not None and status < 500:
                raise RecipeError("hub", [f"the Hub refused the upload to {repo_id!r}: HTTP {status}"]) from None
            failure = f"HTTP {status}"
        except ValueError as err:  # huggingface_hub's model-card metadata validation said no: not worth a retry
            raise RecipeError("hub", [f"the Hub rejected the model card's metadata: {err}"]) from None
        except Exception as err:
            if not is_network_error(err):
                raise
            failure = type(err).__name__
        if attempt + 1 < RETRIES:
            log.warning("Upload to %s failed (%s); retrying in %d s", repo_id, failure, 2 ** (attempt + 1))
            time.sleep(2 ** (attempt + 1))
    raise RecipeError("hub", [f"upload to {repo_id!r} failed {RETRIES} times ({failure}); nothing local was "
                              f"changed: run `finetune push RUN_DIR` again when the Hub is reachable"])


def is_network_error(err: Exception) -> bool:
    """Refused, reset, timed out, DNS: worth another try. (huggingface_hub's HTTP layer has changed libraries over
    its versions, so its errors are recognised by their module.)"""
    return isinstance(err, (ConnectionError, TimeoutError, OSError)) or \
        type(err).__module__.split(".")[0] in {"httpx", "httpx2", "requests", "urllib3"}


def repos(hub: HubConfig) -> list[tuple[str, str | None]]:
    """(kind, repo id) pairs an upload goes to; with `both`, the merged model gets a `-merged` sibling repo."""
    if hub.upload == "both":
        return [("adapter", hub.repo_id), ("merged", f"{hub.repo_id}-merged" if hub.repo_id else None)]
    return [(hub.upload, hub.repo_id)]


def publish(recipe: Recipe) -> list[str]:
    """End of a run (hub.push; call it on the main process): stage and upload; a failure is logged, never fatal
    to the run."""
    if not recipe.hub.push:
        return []
    commits = []
    try:
        for kind, repo in repos(recipe.hub):
            folder = Path(recipe.output_dir) / "hub-upload" / kind
            stage(recipe.output_dir, recipe, kind, folder, repo)
            commits.append(upload(folder, repo, recipe.hub.private, recipe.hub.revision, recipe.hub.commit_message))
            log.info("Pushed %s to %s", kind, repo)
    except RecipeError as err:
        log.error("Push failed; the run's outputs are intact. Retry with: finetune push %s\n%s",
                  recipe.output_dir, err)
    return commits
