"""Recipe problems as a user reads them: every problem at once, each with the key, the value given and the fix."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from finetune.errors import UserError


class RecipeError(UserError, ValueError):
    """A recipe problem a user can fix; its message lists every problem found, one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} {noun}\n{lines}")


def describe(error: dict[str, Any], raw: dict[str, Any], schema: type[BaseModel]) -> str:
    """One pydantic error -> 'key: what is wrong (got value). fix'."""
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_fields(schema, loc[:-1])
        close = suggest(loc[-1], known)
        hint = f"did you mean {'.'.join(loc[:-1] + [close])!r}?" if close else f"valid keys: {', '.join(known)}"
        return f"{key}: unknown key; {hint}"
    if kind == "missing":
        return f"{key}: required but missing; add it to the recipe or pass {key}=... on the command line"
    message = error["msg"].removeprefix("Value error, ")
    got = _lookup(raw, error["loc"])
    if got is _MISSING or (kind == "value_error" and isinstance(got, dict)):  # a cross-field rule of a section
        return f"{key}: {message}"
    return f"{key}: {message} (got {got!r})"


_MISSING = object()


# Short names people type for training keys, from other tools' flags (lr, bs, epochs).
ALIASES = {"lr": "learning_rate", "bs": "per_device_train_batch_size", "batch_size": "per_device_train_batch_size",
           "epochs": "num_train_epochs", "steps": "max_steps", "grad_accum": "gradient_accumulation_steps",
           "accumulation_steps": "gradient_accumulation_steps", "warmup": "warmup_steps", "wd": "weight_decay"}


def suggest(name: str, known: list[str]) -> str | None:
    """The known key `name` was most likely meant to be: a known alias (lr), a close spelling, else one that
    contains it (epochs)."""
    if ALIASES.get(name.lower()) in known:
        return ALIASES[name.lower()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    containing = [k for k in known if name.lower() in k.lower() or k.lower() in name.lower()]
    return containing[0] if len(containing) == 1 else None


def _lookup(raw: Any, loc: tuple) -> Any:
    node = raw
    for part in loc:
        if part == 0 and isinstance(node, dict):
            continue  # a single source written as a mapping stands for a list of one
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _known_fields(schema: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the schema section at `loc` (list indices skipped)."""
    model = schema
    for part in loc:
        if part.isdigit():
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        inner = getattr(annotation, "__args__", (annotation,))
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)

