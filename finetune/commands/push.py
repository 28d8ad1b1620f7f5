"""Publish a finished run to the Hugging Face Hub: the best adapter and/or the merged model, with a model card.

Run as `finetune push` (or `python scripts/push.py`), examples below.

Reads <run>/recipe.yaml (the resolved recipe; its `hub` section gives the defaults) and <run>/report.json (the
results in the card). The token comes from HF_TOKEN or `hf auth login`; it is never printed or written anywhere.
--dry-run writes exactly what would be uploaded to <run>/hub-upload/<adapter|merged>/ and uploads nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune.hub import repos, stage, upload
from finetune.recipe import RecipeError, load_recipe

EXAMPLES = """examples:
  finetune push runs/es-synth-base --dry-run                # stage the folder(s), list files and sizes
  finetune push runs/spanish-small --repo-id me/whisper-small-es --upload both
exit status: 0 pushed (or staged); 2 no run there, no repo id, or the Hub refused (the message says why)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repo-id", help="default: the recipe's hub.repo_id")
    parser.add_argument("--upload", choices=["adapter", "merged", "both"], help="default: the recipe's hub.upload")
    parser.add_argument("--dry-run", action="store_true", help="stage and list the files; upload nothing")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.run_dir / "recipe.yaml")
    hub = recipe.hub.model_copy(update={k: v for k, v in (("repo_id", args.repo_id), ("upload", args.upload))
                                        if v is not None})
    recipe = recipe.model_copy(update={"hub": hub})
    if not hub.repo_id and not args.dry_run:
        raise RecipeError("hub", ["no repo: pass --repo-id <user-or-org>/<name> or set hub.repo_id"])
    for kind, repo in repos(hub):
        folder = args.run_dir / "hub-upload" / kind
        files = stage(args.run_dir, recipe, kind, folder, repo)
        print(f"{kind} -> {repo or '(no repo_id)'}: {folder}")
        for name, size in files:
            print(f"  {size:>14,d}  {name}")
        if not args.dry_run:
            print(f"  committed: {upload(folder, repo, hub.private, hub.revision, hub.commit_message)}")
    return 0

