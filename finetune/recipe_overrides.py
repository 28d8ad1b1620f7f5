"""Command-line overrides: `section.key=value` applied to the raw recipe before it is validated."""

from __future__ import annotations

from typing import Any

import yaml


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in the nested dict; the value is parsed as YAML (so 5.0e-4 is a float, [a, b] a list)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r}: expected section.key=value, e.g. train.learning_rate=5.0e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"override {item!r}: value is not valid YAML ({err})") from None
    parts = key.strip().split(".")
    parent: Any = None
    node: Any = raw
    for depth, part in enumerate(parts):
        if part.isdigit() and isinstance(node, dict) and isinstance(parent, dict):
            node = parent[parts[depth - 1]] = [node]  # a single source written as a mapping is a list of one
        if depth == len(parts) - 1:
            break
        parent, node = node, _child(node, part, parts[: depth + 1], item)
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, item)] = value
    else:
        node[last] = value


def _child(node: Any, part: str, trail: list[str], item: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, item)]
    if not isinstance(node, dict):
        raise ValueError(f"override {item!r}: {'.'.join(trail[:-1])} is a value, not a section")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(f"override {item!r}: {part!r} is not an index of a list of {len(node)} items")
    return int(part)
