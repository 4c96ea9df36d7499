"""The records that describe a repo commit: its files with their hashes, as the store and bundles keep them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirror.errors import IntegrityError
from mirror.paths import check_commit, check_relpath, is_commit, is_sha256
from mirror.repo import RepoKey, check_repo_id


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
class ListedFile:
    """One entry of a commit's complete listing as the hub gives it (what huggingface_hub keeps in
    trees/<commit>.json): kept for the files a filtered sync did not fetch, whose content sha256 is unknown
    unless they are LFS files. `oid` is the git blob id (the pointer's for an LFS file)."""

    path: str
    size: int
    oid: str
    lfs_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "size": self.size, "oid": self.oid}
        if self.lfs_sha256 is not None:
            data["lfs_sha256"] = self.lfs_sha256
        return data

    @classmethod
    def from_json(cls, data: Any) -> ListedFile:
        try:
            sha = data.get("lfs_sha256")
            entry = cls(check_relpath(str(data["path"]), "listed path"), data["size"], data["oid"], sha)
        except (AttributeError, KeyError, TypeError) as e:
            raise IntegrityError(f"malformed listing entry {data!r}: {e}") from None
        if (
            not isinstance(entry.size, int)
            or isinstance(entry.size, bool)
            or entry.size < 0
            or not isinstance(entry.oid, str)
            or not is_commit(entry.oid)
            or not (sha is None or (isinstance(sha, str) and is_sha256(sha)))
        ):
            raise IntegrityError(f"malformed listing entry for {entry.path!r}")
        return entry

    @classmethod
    def of(cls, record: FileRecord) -> ListedFile:
        return cls(record.path, record.size, record.oid, record.sha256 if record.lfs else None)


def listing_from_json(value: Any) -> tuple[ListedFile, ...]:
    """A complete listing, checked: every path once, sorted."""
    if not isinstance(value, list):
        raise IntegrityError("malformed listing: not a list")
    entries = tuple(sorted((ListedFile.from_json(e) for e in value), key=lambda e: e.path))
    if len({e.path for e in entries}) != len(entries):
        raise IntegrityError("malformed listing: a path is listed twice")
    return entries


def check_listing(files: tuple[FileRecord, ...], listing: tuple[ListedFile, ...], what: str) -> None:
    """The files of a partial record must be in its complete listing, as listed."""
    listed = {e.path: e for e in listing}
    for f in files:
        if listed.get(f.path) != ListedFile.of(f):
            raise IntegrityError(f"{what}: {f.path!r} is not in the commit's complete listing as recorded")


@dataclass(frozen=True)
class Snapshot:
    """The files of one repo at one commit. `complete` says they are every file upstream has there.

    `listing` is the commit's complete listing, kept for a record of only some files (a filtered sync)
    when the hub gave every file's git id (the Hugging Face Hub does; ModelScope lists no git ids);
    None otherwise. A complete record needs none: its files are the listing.
    """

    source: str
    repo_type: str
    repo_id: str
    commit: str
    files: tuple[FileRecord, ...]
    complete: bool
    synced_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    listing: tuple[ListedFile, ...] | None = None

    def full_listing(self) -> tuple[ListedFile, ...] | None:
        """Every file of the commit, whether this record holds them all or kept the listing beside them."""
        if self.complete:
            return tuple(ListedFile.of(f) for f in sorted(self.files, key=lambda f: f.path))
        return self.listing

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def key(self) -> RepoKey:
        return RepoKey(self.source, self.repo_type, self.repo_id)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.key.to_json(),
            "commit": self.commit,
            "complete": self.complete,
            "synced_at": self.synced_at,
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
            # Only for a partial record: the records of complete commits stay as they were.
            **(
                {"listing": [e.to_json() for e in self.listing]} if self.listing and not self.complete else {}
            ),
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
                listing=listing_from_json(data["listing"]) if "listing" in data else None,
            )
        except (KeyError, TypeError) as e:
            raise IntegrityError(f"malformed snapshot record: {e}") from None
        if len({f.path for f in files}) != len(files):
            raise IntegrityError(f"snapshot {snap.repo_id}@{snap.commit} lists a path twice")
        if snap.listing is not None:
            check_listing(files, snap.listing, f"snapshot {snap.repo_id}@{snap.commit}")
        return snap

    def merged(self, other: Snapshot) -> Snapshot:
        """This commit's files together with another sync's (a later sync may want more files)."""
        files = {f.path: f for f in self.files}
        files.update({f.path: f for f in other.files})
        complete = self.complete or other.complete
        return Snapshot(
            source=self.source,
            repo_type=self.repo_type,
            repo_id=self.repo_id,
            commit=self.commit,
            files=tuple(sorted(files.values(), key=lambda f: f.path)),
            complete=complete,
            synced_at=max(self.synced_at, other.synced_at),
            listing=None if complete else (other.listing or self.listing),
        )
