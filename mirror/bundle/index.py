"""The bundle index: the format's constants and the typed `MIRROR-BUNDLE.json` (`BundleIndex`: repos,
commits, files, and where each content is when the bundle does not pack it itself), with its JSON form.

Pure data: it reads no file. `BundleIndex.from_json` is the one way in from JSON, and it validates
(`mirror.bundle.parse`): an index built any other way is turned into JSON and parsed back before it is
written, so every index the package hands out is valid by construction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import accumulate
from typing import Any

from mirror import __version__
from mirror.bounded import INDEX
from mirror.bundle.bytegroup import Codec
from mirror.records import FieldsJson
from mirror.repo import RepoKey, revisions_json
from mirror.snapshot import FileRecord, ListedFile
from mirror.validate.scan import RevisionScan

INDEX_NAME = "MIRROR-BUNDLE.json"
SUMS_NAME = "SHA256SUMS"
README_NAME = "README.txt"  # third, only in a bundle with members packed by a codec (format 1.3)
FORMAT = "mirror-bundle"
# The version this mirror writes, and every version it reads (oldest first). 1.1 put the repo type in the
# member names (a model and a dataset with the same source, id and commit had the same names in 1); 1.2
# added each commit's validation scan (`IndexedCommit.scan`), member names unchanged. 1.3 packs some files
# with a codec (`export --codec bytegroup`, each such file's `codec`): written only when one is, so a bundle
# without stays 1.2, byte for byte.
FORMAT_VERSION: int | str = "1.2"
FORMAT_VERSIONS: tuple[int | str, ...] = (1, "1.1", "1.2", "1.3")
SCANNED_SINCE: int | str = "1.2"  # the first version whose commits carry their scan
CODECS_SINCE: int | str = "1.3"  # the first version whose files may name a codec
MAX_INDEX_SIZE = INDEX.size
DEFAULT_BRANCHES = ("main", "master")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class IndexedCommit:
    """One commit of a repo in a bundle: its files, and whether they are every file upstream has there.

    `listing` (optional, only on a commit that is not complete) is the commit's complete listing, for the
    HF cache's trees/<commit>.json; bundles without it are read as before (no trees/ for such a commit).

    `scan` (format 1.2; None in older bundles) is the validation scan of exactly these files, as the store
    recorded it at sync (the hub's own findings merged) or as export made it, and `scan_notes` what a
    reviewer should know of it (the hub's scan absent, ...). Part of the index, it is covered by the
    index's digest and signature like everything in it.
    """

    commit: str
    complete: bool
    files: tuple[FileRecord, ...]
    listing: tuple[ListedFile, ...] | None = None
    scan: RevisionScan | None = None
    scan_notes: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        data = {"commit": self.commit, "complete": self.complete, "files": [f.to_json() for f in self.files]}
        if self.listing is not None:  # written only when set: other bundles stay byte-identical
            data["listing"] = [e.to_json() for e in self.listing]
        if self.scan is not None:
            data["scan"] = {**self.scan.to_json(), "notes": list(self.scan_notes)}
        return data


@dataclass(frozen=True)
class IndexedRepo:
    """One repo in a bundle: revision names in selection order (the first is the layouts' default).

    `hf_id` (optional, from the manifest's `hf_id:`) is the id a repo from another hub takes in the
    Hugging Face cache instead of its own.
    """

    source: str
    repo_type: str
    repo_id: str
    revisions: tuple[tuple[str, str], ...]
    commits: tuple[IndexedCommit, ...]
    hf_id: str | None = None

    @property
    def key(self) -> RepoKey:
        return RepoKey(self.source, self.repo_type, self.repo_id)

    def files(self) -> Iterator[FileRecord]:
        """Every file record of every commit it holds."""
        return (f for c in self.commits for f in c.files)

    def commit(self, commit: str) -> IndexedCommit:
        for c in self.commits:
            if c.commit == commit:
                return c
        raise KeyError(commit)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.key.to_json()
        if self.hf_id is not None:  # written only when set: bundles without it stay byte-identical
            data["hf_id"] = self.hf_id
        data["revisions"] = revisions_json(self.revisions)
        data["commits"] = [c.to_json() for c in self.commits]
        return data


@dataclass(frozen=True)
class Chunk(FieldsJson):
    """One piece of a content larger than a volume: which volume packs it, its size and its own sha256."""

    volume: int
    size: int
    sha256: str


@dataclass(frozen=True)
class Placement:
    """Where a content (by sha256) is when the bundle does not simply pack it: the default, no field set,
    is a plain bundle's "packed here".

    `in_target`: a delta left it out; the target must already hold it. `volume`: the volume of the set that
    packs it whole. `chunks`: its pieces in order (a content larger than a volume), each in some volume.
    """

    in_target: bool = False
    volume: int | None = None
    chunks: tuple[Chunk, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.in_target:
            return {"in_target": True}
        if self.chunks:
            return {"chunks": [c.to_json() for c in self.chunks]}
        if self.volume is not None:
            return {"volume": self.volume}
        return {}

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Where each chunk starts in the content."""
        return tuple(accumulate((c.size for c in self.chunks[:-1]), initial=0)) if self.chunks else ()

    def volumes(self) -> list[int]:
        """The volumes this content needs (none for a plain bundle's or the target's)."""
        if self.chunks:
            return sorted({c.volume for c in self.chunks})
        return [self.volume] if self.volume is not None else []


PACKED_HERE = Placement()
IN_TARGET = Placement(in_target=True)


@dataclass(frozen=True)
class VolumeSet:
    """The set a volume belongs to: `id` (the sha256 of the description every volume shares), this volume's
    number (1-based) and every volume's file name, in order."""

    id: str
    volume: int
    names: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "volume": self.volume, "names": list(self.names)}

    def name(self, volume: int) -> str:
        return self.names[volume - 1]


@dataclass(frozen=True)
class BundleIndex:
    """The parsed, validated `MIRROR-BUNDLE.json`.

    `format_version` is the one the index was written in (a bundle read is described as it was written);
    a new index has this mirror's (1.3 once it has `codecs`). `codecs` maps a packed content's sha256 to
    its codec, for content packed other than as is (`export --codec`). `placements` maps a content's sha256 to where it is, for content the bundle does not pack itself (a
    delta's `in_target`, a volume set's volumes); `volume_set` is set on a volume of a set.
    """

    created: str
    repos: tuple[IndexedRepo, ...]
    tool_version: str = __version__
    tool: str = "mirror"
    placements: Mapping[str, Placement] = field(default_factory=dict)
    volume_set: VolumeSet | None = None
    format_version: int | str = FORMAT_VERSION  # as the index gives it: one of FORMAT_VERSIONS
    codecs: Mapping[str, Codec] = field(default_factory=dict)  # sha256 -> how it is packed, if not as is

    def placement(self, sha256: str) -> Placement:
        return self.placements.get(sha256, PACKED_HERE)

    def codec(self, sha256: str) -> Codec | None:
        """How the bundle packs this content, when not as is (format 1.3)."""
        return self.codecs.get(sha256)

    def files(self) -> Iterator[FileRecord]:
        """Every file record of every repo it describes."""
        return (f for repo in self.repos for f in repo.files())

    def left_in_target(self) -> list[FileRecord]:
        """The files a delta does not carry: the far side holds their content."""
        return [f for f in self.files() if self.placement(f.sha256).in_target]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": self.format_version,
            "tool": self.tool,
            "tool_version": self.tool_version,
            "created": self.created,
        }
        if self.volume_set is not None:  # written only for volumes: plain bundles stay byte-identical
            data["volume_set"] = self.volume_set.to_json()
        repos = []
        for repo in self.repos:
            entry = repo.to_json()
            for commit in entry["commits"]:
                for f in commit["files"]:
                    f.update(self.placement(f["sha256"]).to_json())
                    if (codec := self.codec(f["sha256"])) is not None:  # only then: others stay as they were
                        f["codec"] = codec.to_json()
            repos.append(entry)
        data["repos"] = repos
        return data

    def set_id(self) -> str:
        """The id of the volume set this index describes: the sha256 of the index with the volume's own
        number and the id itself left out, so every volume of one export computes the same."""
        assert self.volume_set is not None
        blank = replace(self, volume_set=VolumeSet("", 0, self.volume_set.names))
        return hashlib.sha256(blank.to_bytes()).hexdigest()

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: Any) -> BundleIndex:
        """The index `data` (parsed JSON) describes, validated whole; IntegrityError naming what is wrong."""
        from mirror.bundle.parse import parse_index  # the parser builds on these types

        return parse_index(data)
