"""Records whose JSON is their fields, in order (paths, and objects in a bucket, as strings): the `to_json` of
the small result types."""

from __future__ import annotations

from dataclasses import fields
from pathlib import PurePath
from typing import Any

from mirror.objects import ObjectPath

NOT_IN_JSON = {"json": False}
"""`field(metadata=NOT_IN_JSON)`: a field `FieldsJson.to_json` leaves out."""


class FieldsJson:
    """Mixin for a dataclass: `to_json()` gives its fields by name, in declaration order, but those marked
    NOT_IN_JSON."""

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: _plain(getattr(self, f.name))
            for f in fields(self)  # type: ignore[arg-type]  # a dataclass, by contract
            if f.metadata.get("json", True)
        }


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, PurePath | ObjectPath) else value
