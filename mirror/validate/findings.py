"""What a check found in one file: the types every validator returns and the policy reads.

A `Finding` names the file (its path in the repo), the kind of problem (`Kind`: the policy key that rules
on it, or `invalid` for what is always refused), and a detail a person reads ("imports os.system",
"tensor 'w' ends at byte 96, the data holds 80"). Findings are plain data: recorded in the store beside
a commit's record, carried in the bundle's index (covered by its digest and signature), shown by
`mirror inspect` and `mirror scan`. Their JSON form (`to_json` / `from_json`) is part of the bundle
format: add fields, never rename them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

# What the policy rules on (README "Validation and policy"):
# - "invalid": a safetensors/GGUF/ONNX header that does not hold together: always refused;
# - "pickle": a pickle-based file importing a global outside the allowlist (or one that cannot be read);
# - "remote_code": a *.py file, an `auto_map`, code taken from another repo;
# - "hub_flagged": the hub's own scan flagged the file;
# - "license": the model card's licence is outside the policy's allowlist;
# - "size": the revision is larger than the policy's max_size.
Kind = Literal["invalid", "pickle", "remote_code", "hub_flagged", "license", "size"]
KINDS: tuple[str, ...] = get_args(Kind)


@dataclass(frozen=True, order=True)
class Finding:
    """One thing a check found in `path` (a repo file's path; "" for the revision as a whole)."""

    path: str
    kind: Kind
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Any) -> Finding:
        """From its JSON form; ValueError saying what is wrong (a bundle's index is untrusted input)."""
        if not isinstance(data, dict):
            raise ValueError("a finding is not an object")
        path, kind, detail = data.get("path"), data.get("kind"), data.get("detail")
        if not isinstance(path, str) or not isinstance(detail, str):
            raise ValueError("a finding's path and detail must be strings")
        if kind not in KINDS:
            raise ValueError(f"unknown finding kind {kind!r} (known: {', '.join(KINDS)})")
        return cls(path, cast(Kind, kind), detail)
