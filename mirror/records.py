"""Records whose JSON is their fields, in order (paths as strings): the `to_json` of the small result types."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import PurePath
from typing import Any


class FieldsJson:
    """Mixin for a dataclass: `to_json()` gives its fields by name, in declaration order."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]  # a dataclass, by contract
        return {name: str(value) if isinstance(value, PurePath) else value for name, value in data.items()}
