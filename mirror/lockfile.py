"""Lock files: the exact commit and every file's sha256 for each model revision a sync resolved, so a later
`mirror sync --locked` fetches exactly the same bytes.

Each entry names its repo with the fields every JSON output uses (`source`, `repo_type`, `repo_id`); lock
files written before say `type` and `repo`, and are read as well."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.bounded import LOCK_FILE, parse_json, read_bounded
from mirror.errors import ManifestError
from mirror.fsutil import atomic_write_json
from mirror.hashing import FileSum
from mirror.paths import is_commit, is_safe_relpath, is_sha256
from mirror.repo import RepoKey, RevisionRequest, is_repo_id
from mirror.settings import endpoint_problem

LOCK_VERSION = 1


LockedFile = FileSum
"""A pinned file of a locked revision: its path in the repo, size and sha256."""


@dataclass(frozen=True)
class LockedRevision:
    key: RepoKey
    revision: str
    commit: str
    files: tuple[LockedFile, ...]
    endpoint: str | None = None
    token_env: str | None = None

    @property
    def request(self) -> RevisionRequest:
        """The revision as a request, asked of the endpoint (and with the token) the sync that locked it used."""
        return RevisionRequest(self.key, self.revision, endpoint=self.endpoint, token_env=self.token_env)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {**self.key.to_json(), "revision": self.revision, "commit": self.commit}
        data.update({k: v for k, v in (("endpoint", self.endpoint), ("token_env", self.token_env)) if v})
        data["files"] = [f.to_json() for f in self.files]
        return data


def write_lock(path: Path, revisions: list[LockedRevision]) -> None:
    atomic_write_json(path, {"version": LOCK_VERSION, "revisions": [r.to_json() for r in revisions]})


def read_lock(path: Path) -> list[LockedRevision]:
    """Parse and check a lock file; anything odd is a ManifestError naming the file and the entry."""
    where = str(path)
    raw = read_bounded(Path(path), LOCK_FILE, ManifestError)
    try:
        data = parse_json(raw, LOCK_FILE)
    except json.JSONDecodeError as e:
        raise ManifestError(f"not valid JSON: {e.msg}", file=where, line=e.lineno) from None
    except ValueError as e:
        raise ManifestError(f"not valid JSON: {e}", file=where) from None
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
        raise ManifestError(
            f"not a mirror lock file (want version {LOCK_VERSION})", file=where, key="version"
        )
    entries = data.get("revisions")
    if not isinstance(entries, list):
        raise ManifestError("must be a list", file=where, key="revisions")
    return [_parse_entry(entry, where, f"revisions[{i}]") for i, entry in enumerate(entries)]


def _parse_entry(entry: Any, where: str, key: str) -> LockedRevision:
    try:
        files = tuple(
            LockedFile(path=str(f["path"]), size=int(f["size"]), sha256=str(f["sha256"]))
            for f in entry["files"]
        )
        repo = RepoKey(
            source=str(entry["source"]),
            repo_type=str(entry.get("repo_type", entry.get("type", "model"))),  # `type`: before repo_type
            repo_id=str(entry["repo_id"] if "repo_id" in entry else entry["repo"]),  # `repo`: before repo_id
        )
        locked = LockedRevision(
            key=repo,
            revision=str(entry["revision"]),
            commit=str(entry["commit"]),
            files=files,
            endpoint=entry.get("endpoint"),
            token_env=entry.get("token_env"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"malformed entry ({e})", file=where, key=key) from None
    if not is_repo_id(locked.key.repo_id) or not is_commit(locked.commit):
        raise ManifestError(
            f"bad repo id or commit in {locked.key.repo_id}@{locked.commit}", file=where, key=key
        )
    if locked.endpoint is not None and (problem := endpoint_problem(str(locked.endpoint))):
        raise ManifestError(problem, file=where, key=f"{key}.endpoint")
    for f in files:
        if not is_safe_relpath(f.path) or not is_sha256(f.sha256) or f.size < 0:
            raise ManifestError(f"bad file entry {f.path!r}", file=where, key=f"{key}.files")
    return locked
