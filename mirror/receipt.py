"""The receipt an import leaves for each repo (or, in plain-folder layouts, each revision folder) it
published: which bundle (or volumes of a set) it came from, its revisions, and every file with its size and
sha256, which `mirror verify --target` checks the tree against and `mirror inventory` takes as known.

`Receipt.to_bytes` is what the layouts write; `read_receipt` reads one back, checking every file record
(what verify relies on) and taking the descriptive fields as they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.bounded import RECORD, read_json_bounded
from mirror.bundle import BundleIndex, IndexedRepo
from mirror.bundle.location import BundlePath
from mirror.errors import IntegrityError, MirrorError
from mirror.fsutil import json_bytes
from mirror.hashing import FileSum
from mirror.paths import check_commit, check_relpath, is_sha256
from mirror.repo import RepoKey, revisions_json


@dataclass(frozen=True)
class ReceiptCommit:
    commit: str
    complete: bool
    files: tuple[FileSum, ...]


@dataclass(frozen=True)
class Receipt:
    """What an import records about a repo: which bundle (or volumes of a set) with its id (the sha256 of
    its index; a set's id), which revisions, which files with their hashes. The plain-folder layouts write
    one per revision folder, with `folder`, `revision` and `commit` set."""

    layout: str
    symlinks: bool
    bundle: str
    bundle_id: str
    bundle_created: str
    bundle_tool_version: str
    source: str
    repo_type: str
    repo_id: str
    revisions: tuple[tuple[str, str], ...]
    commits: tuple[ReceiptCommit, ...]
    volumes: tuple[str, ...] = ()
    hf_id: str | None = None
    folder: str | None = None
    revision: str | None = None
    commit: str | None = None

    @classmethod
    def of(
        cls,
        bundle: BundlePath,
        bundle_id: str,
        index: BundleIndex,
        repo: IndexedRepo,
        *,
        layout: str,
        symlinks: bool,
        volumes: Sequence[str] = (),
    ) -> Receipt:
        """The receipt of a repo an import publishes from `bundle` (of a set: the volumes given)."""
        return cls(
            layout=layout,
            symlinks=symlinks,
            bundle=bundle.name,
            bundle_id=bundle_id,
            bundle_created=index.created,
            bundle_tool_version=index.tool_version,
            source=repo.source,
            repo_type=repo.repo_type,
            repo_id=repo.repo_id,
            revisions=repo.revisions,
            commits=tuple(
                ReceiptCommit(c.commit, c.complete, tuple(FileSum(f.path, f.size, f.sha256) for f in c.files))
                for c in repo.commits
            ),
            volumes=tuple(volumes),
            hf_id=repo.hf_id,
        )

    def files(self) -> list[tuple[str, str, int, str]]:
        """(commit, path, size, sha256) of every file the receipt lists."""
        return [(c.commit, f.path, f.size, f.sha256) for c in self.commits for f in c.files]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "layout": self.layout,
            "symlinks": self.symlinks,
            "bundle": self.bundle,
            **({"volumes": list(self.volumes)} if self.volumes else {}),
            "bundle_id": self.bundle_id,
            "bundle_created": self.bundle_created,
            "bundle_tool_version": self.bundle_tool_version,
            **RepoKey(self.source, self.repo_type, self.repo_id).to_json(),
            **({"hf_id": self.hf_id} if self.hf_id is not None else {}),
            "revisions": revisions_json(self.revisions),
            "commits": [
                {
                    "commit": c.commit,
                    "complete": c.complete,
                    "files": [f.to_json() for f in c.files],
                }
                for c in self.commits
            ],
        }
        for key, value in (("folder", self.folder), ("revision", self.revision), ("commit", self.commit)):
            if value is not None:
                data[key] = value
        return data

    def to_bytes(self) -> bytes:
        return json_bytes(self.to_json())

    @classmethod
    def from_json(cls, data: Any) -> Receipt:
        """The receipt in data; ValueError if a file record (or the list of them) is malformed. The other
        fields are taken when present and of the right type (they describe; the files are the evidence)."""
        commits = []
        try:
            for c in data["commits"]:
                commit = check_commit(c["commit"])
                files = []
                for f in c["files"]:
                    path, size, sha256 = check_relpath(f["path"]), f["size"], f["sha256"]
                    if not isinstance(size, int) or not isinstance(sha256, str) or not is_sha256(sha256):
                        raise ValueError(f"bad file record {f!r}")
                    files.append(FileSum(path, size, sha256))
                commits.append(ReceiptCommit(commit, c.get("complete") is True, tuple(files)))
        except (KeyError, TypeError, AttributeError, IntegrityError) as e:
            raise ValueError(f"malformed: {e}") from None

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        revisions = data.get("revisions")
        volumes = data.get("volumes")
        return cls(
            layout=text("layout") or "",
            symlinks=data.get("symlinks") is not False,
            bundle=text("bundle") or "",
            bundle_id=text("bundle_id") or "",
            bundle_created=text("bundle_created") or "",
            bundle_tool_version=text("bundle_tool_version") or "",
            source=text("source") or "",
            repo_type=text("repo_type") or "",
            repo_id=text("repo_id") or "",
            revisions=tuple(
                (r["name"], r["commit"])
                for r in (revisions if isinstance(revisions, list) else [])
                if isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("commit"), str)
            ),
            commits=tuple(commits),
            volumes=tuple(v for v in (volumes if isinstance(volumes, list) else []) if isinstance(v, str)),
            hf_id=text("hf_id"),
            folder=None if data.get("folder") is None else str(data["folder"]),
            revision=text("revision"),
            commit=text("commit"),
        )


def read_receipt(path: Path) -> Receipt:
    """The receipt in a file; ValueError if it is unreadable or malformed."""
    try:
        data = read_json_bounded(path, RECORD, MirrorError)
    except MirrorError as e:
        raise ValueError(str(e)) from None
    return Receipt.from_json(data)
