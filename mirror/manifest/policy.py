"""The `policy:` mapping of a manifest (under `defaults:` and per model) and `--policy FILE` (the same keys
at its top level), read into a `mirror.validate.policy.Policy`; a bad key or value is a ManifestError
naming the file, the line and the key, as everywhere in the manifest."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yaml.nodes import Node, ScalarNode

from mirror.bounded import POLICY
from mirror.errors import ManifestError
from mirror.manifest.nodes import TAG, NodeReader, compose, join_key, kind, read_text
from mirror.manifest.values import closest
from mirror.units import parse_size
from mirror.validate.policy import ACTIONS, KEYS, Policy

ANY_LICENSE = "any"  # `licenses: any`: no allowlist (a model overriding its defaults' list)
NO_LIMIT = "none"  # `max_size: none`: no size limit


def policy_fields(reader: NodeReader, node: Node, key: str) -> dict[str, Any]:
    """The keys a `policy:` mapping sets, each checked, as Policy's fields (a model's override the
    defaults' key by key: merge the two dicts, then `Policy(**merged)`)."""
    items = reader.entries(node, key)
    fields: dict[str, Any] = {}
    for name, (key_node, value_node) in items.items():
        field_key = join_key(key, name)
        if name not in KEYS:
            reader.fail(
                key_node, field_key, f"unknown key{closest(name, KEYS)}; allowed here: {', '.join(KEYS)}"
            )
        if name == "licenses":
            fields[name] = _licenses(reader, value_node, field_key)
        elif name == "max_size":
            fields[name] = _max_size(reader, value_node, field_key)
        else:
            action = reader.string(value_node, field_key)
            if action not in ACTIONS:
                reader.fail(
                    value_node,
                    field_key,
                    f"{action!r}{closest(action, ACTIONS)} is not one of {', '.join(ACTIONS)}",
                )
            fields[name] = action
    return fields


def make_policy(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> Policy:
    """The policy of a model entry: its own keys over the defaults', key by key."""
    return Policy(**{**defaults, **own})


def _licenses(reader: NodeReader, node: Node, key: str) -> frozenset[str] | None:
    if isinstance(node, ScalarNode) and node.tag == TAG + "str" and node.value == ANY_LICENSE:
        return None
    if isinstance(node, ScalarNode):
        reader.fail(
            node,
            key,
            f"expected a list of licence ids (e.g. [apache-2.0, mit]) or '{ANY_LICENSE}', got {kind(node)}",
        )
    names = reader.strings(node, key)
    if not names:
        reader.fail(
            node, key, f"is empty, which would refuse every model; list licences or write '{ANY_LICENSE}'"
        )
    for name, item, item_key in names:
        if not name or any(c.isspace() or not c.isprintable() for c in name):
            reader.fail(
                item, item_key, f"{name!r} is not a licence id (as a model card's 'license:', e.g. mit)"
            )
    return frozenset(name.casefold() for name, _, _ in names)


def _max_size(reader: NodeReader, node: Node, key: str) -> int | None:
    if isinstance(node, ScalarNode) and node.tag == TAG + "int":
        text = str(node.value)  # bytes, as a plain number on the command line
    else:
        text = reader.string(node, key)
        if text == NO_LIMIT:
            return None
    try:
        size = parse_size(text)
    except ValueError as e:
        reader.fail(node, key, f"{e}; or '{NO_LIMIT}'")
    if size <= 0:
        reader.fail(node, key, f"must be more than 0 bytes; for no limit write '{NO_LIMIT}' or leave it out")
    return size


def parse_policy(text: str, path: str = "<string>") -> Policy:
    """A policy file's text (the keys of `policy:` at its top level); ``path`` is only used in messages."""
    reader = NodeReader(path)
    root = compose(text, path, POLICY)
    if root is None:
        raise ManifestError(f"policy file is empty; set some of: {', '.join(KEYS)}", file=path, line=1)
    return Policy(**policy_fields(reader, root, ""))


def load_policy_file(path: str | Path) -> Policy:
    """Read and check `--policy FILE`."""
    return parse_policy(read_text(path, POLICY), str(path))
