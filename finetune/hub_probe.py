"""Is the Hugging Face Hub there? One quick request before any download (an unreachable Hub fails in seconds,
not after minutes of retries), and whether a name is a local path rather than a Hub id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import huggingface_hub
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

PROBE_TIMEOUT_S = 10.0  # one request; huggingface_hub's own retries on an unreachable Hub take minutes


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in {"0", "", "false", "no", "off"}


def hub_problem(repo_id: str, repo_type: Literal["model", "dataset"], revision: str | None = None) -> str | None:
    """None when the Hub serves this repo; otherwise why not, in words (asked once, with a short time-out)."""
    if offline():
        return "HF_HUB_OFFLINE is set"
    info = huggingface_hub.model_info if repo_type == "model" else huggingface_hub.dataset_info
    try:
        info(repo_id, revision=revision, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return "it is gated: accept its terms on the Hub and log in with `hf auth login` (or set HF_TOKEN)"
    except RepositoryNotFoundError:
        return "no such repository on the Hub (or it is private: log in with `hf auth login`)"
    except RevisionNotFoundError:
        return f"it has no revision {revision!r}"
    except Exception as err:  # DNS failure, refused connection, time-out, proxy or TLS trouble
        return f"the Hub could not be reached ({type(err).__name__})"
    return None


def is_local(name: str) -> bool:
    """A name that exists on disk, or is written like a path (./x, ../x, /x, ~/x, a/b/c), is not a Hub id."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
