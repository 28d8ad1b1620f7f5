"""Experiment tracking (train.report_to): the Trainer's own integrations, checked before anything trains."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from finetune.recipe import Recipe, RecipeError

TENSORBOARD_DIR = "tensorboard"  # <output_dir>/tensorboard: the event files of every session of the run
# The package a tracker needs, where it differs from the tracker's name (pip name, import name).
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "comet_ml": ("comet-ml", "comet_ml"),
            "azure_ml": ("azureml-core", "azureml.core"), "neptune": ("neptune", "neptune"),
            "flyte": ("flytekitplugins-deck-standard", "flytekitplugins.deck")}


def missing_trackers(names: list[str]) -> list[str]:
    """Trackers in `names` whose package is not importable here, each with the pip command that installs it."""
    missing = []
    for name in names:
        if name in ("none", "all", "kubeflow"):  # kubeflow reports over HTTP, configured by its environment
            continue
        pip_name, module = PACKAGES.get(name, (name, name))
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a dotted name whose parent package is absent
            found = False
        if not found:
            missing.append(f"{name} (pip install {pip_name})")
    return missing


def check_trackers(recipe: Recipe) -> None:
    """Stop before training when a chosen tracker cannot run; point TensorBoard at the run directory."""
    missing = missing_trackers(recipe.train.report_to)
    if missing:
        raise RecipeError("train", [f"train.report_to={recipe.train.report_to}: not installed: {', '.join(missing)}. "
                                    "Install it, or set train.report_to=none"])
    if "tensorboard" in recipe.train.report_to or "all" in recipe.train.report_to:
        # transformers reads the folder from this variable; one the user set wins.
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(recipe.output_dir) / TENSORBOARD_DIR))
