"""A model or dataset card's metadata: the YAML block that opens a repo's README.md, and the licences it
names. One owner for `serve` (the Hub's `cardData`) and the policy (its licence allowlist)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from mirror.bounded import CARD, compose_yaml


def card_data(readme: bytes) -> dict[str, Any] | None:
    """The metadata of a model or dataset card: the YAML block that opens its README.md (`---` lines around
    it), as JSON values; None without one, or when it is not a mapping or is beyond the CARD bound."""
    text = readme.decode("utf-8", "replace")
    lines = text.splitlines()
    if len(readme) > CARD.size or not lines or lines[0].strip() != "---":
        return None
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    if end is None:
        return None
    try:
        node = compose_yaml("\n".join(lines[1:end]), CARD)
        data = SafeConstructor().construct_document(node) if node is not None else None
        if not isinstance(data, dict):
            return None
        parsed: dict[str, Any] = json.loads(json.dumps(data, default=str))  # dates as text, as the Hub's
    except (yaml.YAMLError, ValueError, TypeError):
        return None
    return parsed


def card_licenses(card: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The licences a card's metadata names under `license:` (one, or a list), as written; () for none.
    A value that is not text (a number, a mapping) is kept as its JSON text, so a policy sees it and
    refuses it rather than treating the card as naming no licence at all."""
    value = card.get("license") if card is not None else None
    items = value if isinstance(value, list) else [] if value is None else [value]
    return tuple(item if isinstance(item, str) else json.dumps(item) for item in items if item is not None)
