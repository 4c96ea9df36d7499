"""The records that describe a repo commit: its files with their hashes, as the store and bundles keep them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirror.errors import IntegrityError
from mirror.paths import check_commit, check_relpath, check_repo_id, is_sha256


@dataclass(frozen=True)
class FileRecord:
    """One file of a repo commit.

    `oid` is the hub's git blob id of the file as committed: the sha1 of the content for an ordinary
    file, the sha1 of the LFS pointer for an LFS file. `sha256` is always the content's sha256.
    """

    path: str
    size: int
    sha256: str
    oid: str
    lfs: bool

    @property
    def etag(self) -> str:
        """The name the HF cache gives the blob: the sha256 for LFS files, the git sha1 otherwise."""
        return self.sha256 if self.lfs else self.oid

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "oid": self.oid, "lfs": self.lfs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileRecord:
        try:
            record = cls(
                path=check_relpath(str(data["path"]), "file path"),
                size=int(data["size"]),
                sha256=str(data["sha256"]),
                oid=str(data["oid"]),
                lfs=bool(data["lfs"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IntegrityError(f"malformed file record {data!r}: {e}") from None
        if record.size < 0 or not is_sha256(record.sha256):
            raise IntegrityError(f"malformed file record for {record.path!r}")
        return record


@dataclass(frozen=True)
class Snapshot:
    """The files of one repo at one commit. `complete` says they are every file upstream has there."""

    source: str
    repo_type: str
    repo_id: str
    commit: str
    files: tuple[FileRecord, ...]
    complete: bool
    synced_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "repo_type": self.repo_type,
            "repo_id": self.repo_id,
            "commit": self.commit,
            "complete": self.complete,
            "synced_at": self.synced_at,
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        try:
            files = tuple(FileRecord.from_json(f) for f in data["files"])
            snap = cls(
                source=str(data["source"]),
                repo_type=str(data.get("repo_type", "model")),
                repo_id=check_repo_id(str(data["repo_id"])),
                commit=check_commit(str(data["commit"])),
                files=files,
                complete=bool(data["complete"]),
                synced_at=str(data.get("synced_at", "")),
            )
        except (KeyError, TypeError) as e:
            raise IntegrityError(f"malformed snapshot record: {e}") from None
        if len({f.path for f in files}) != len(files):
            raise IntegrityError(f"snapshot {snap.repo_id}@{snap.commit} lists a path twice")
        return snap

    def merged(self, other: Snapshot) -> Snapshot:
        """This commit's files together with another sync's (a later sync may want more files)."""
        files = {f.path: f for f in self.files}
        files.update({f.path: f for f in other.files})
        return Snapshot(
            source=self.source,
            repo_type=self.repo_type,
            repo_id=self.repo_id,
            commit=self.commit,
            files=tuple(sorted(files.values(), key=lambda f: f.path)),
            complete=self.complete or other.complete,
            synced_at=max(self.synced_at, other.synced_at),
        )
