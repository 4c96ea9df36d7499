"""The bundle index: the format's constants and names, the parsed and validated `MIRROR-BUNDLE.json`
(`BundleIndex`: repos, commits, files, and where each content is when the bundle does not pack it itself),
and the file members it implies (`iter_members`, the one place that names and orders them, `sums_text`,
`chunk_offset`). Pure data: it reads no file, and every other part of the package builds on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import accumulate
from typing import Any, NamedTuple

from mirror import __version__
from mirror.bounded import INDEX
from mirror.clock import parse_iso
from mirror.errors import IntegrityError
from mirror.paths import (
    check_commit,
    check_relpath,
    is_commit,
    is_safe_relpath,
    is_sha256,
    name_problem,
    nested_names,
)
from mirror.repo import REPO_TYPES, RepoKey, check_repo_id
from mirror.snapshot import FileRecord, ListedFile, check_listing, listing_from_json

INDEX_NAME = "MIRROR-BUNDLE.json"
SUMS_NAME = "SHA256SUMS"
FORMAT = "mirror-bundle"
FORMAT_VERSION = 1
MAX_INDEX_SIZE = INDEX.size
# Of PATH_MAX, what a name in a bundle leaves for the target's own path and the folders a layout puts
# around it (the longest: the hf layout's `models--<org>--<name>/.mirror/tmp/<id>/snapshot-<commit>/`).
PATH_ROOM = 512
DEFAULT_BRANCHES = ("main", "master")

_SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

Progress = Callable[[int], None]


def _bad(what: str) -> IntegrityError:
    return IntegrityError(f"invalid bundle index: {what}; the bundle is corrupt or was not written by mirror")


def _field(data: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(data, dict):
        raise _bad(f"{what} is not an object")
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"{what}: {key!r} is missing or has the wrong type")
    return value


def _check_name(value: str, what: str) -> str:
    """A relative path (file path or revision name) that is also safe inside SHA256SUMS and tar headers."""
    return check_relpath(value, what)


def _check_publishable(name: str, what: str) -> None:
    """A name every layout can write below a target: each part within NAME_MAX bytes, and the whole
    leaving PATH_ROOM bytes of PATH_MAX for the target and the layout's own folders around it."""
    problem = name_problem(name, PATH_ROOM)
    if problem is not None:
        raise IntegrityError(
            f"the bundle cannot be imported: {what} cannot be a file name ({problem}, with {PATH_ROOM} "
            "bytes kept for the target and the layout's folders)"
        )


def _file_from_json(data: Any) -> FileRecord:
    what = "file record"
    path = _field(data, "path", str, what)
    _field(data, "size", int, f"file {path!r}")
    _field(data, "sha256", str, f"file {path!r}")
    oid = _field(data, "oid", str, f"file {path!r}")
    _field(data, "lfs", bool, f"file {path!r}")
    record = FileRecord.from_json(data)
    _check_name(record.path, "file path")
    if not (is_commit(oid) or is_sha256(oid)):  # git's sha1 ids, or its sha256 ones
        raise _bad(f"file {path!r} has an invalid oid {oid!r}")
    return record


@dataclass(frozen=True)
class IndexedCommit:
    """One commit of a repo in a bundle: its files, and whether they are every file upstream has there.

    `listing` (optional, only on a commit that is not complete) is the commit's complete listing, for the
    HF cache's trees/<commit>.json; bundles without it are read as before (no trees/ for such a commit).
    """

    commit: str
    complete: bool
    files: tuple[FileRecord, ...]
    listing: tuple[ListedFile, ...] | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        data = {"commit": self.commit, "complete": self.complete, "files": [f.to_json() for f in self.files]}
        if self.listing is not None:  # written only when set: other bundles stay byte-identical
            data["listing"] = [e.to_json() for e in self.listing]
        return data

    @classmethod
    def from_json(cls, data: Any) -> IndexedCommit:
        commit = check_commit(_field(data, "commit", str, "commit entry"))
        complete = _field(data, "complete", bool, f"commit {commit}")
        files = tuple(_file_from_json(f) for f in _field(data, "files", list, f"commit {commit}"))
        paths = {f.path for f in files}
        if len(paths) != len(files):
            raise _bad(f"commit {commit} lists a path twice")
        # A file that is also a folder of another file cannot exist on disk.
        for folder, path in nested_names(paths):
            raise _bad(f"commit {commit}: {path!r} lies inside another file, {folder!r}")
        for path in sorted(paths):
            _check_publishable(path, f"commit {commit}: file {path!r}")
        listing = None
        if "listing" in data:
            if complete:
                raise _bad(f"commit {commit} is complete but carries a listing")
            try:
                listing = listing_from_json(data["listing"])
                check_listing(files, listing, f"commit {commit}")
            except IntegrityError as e:
                raise _bad(str(e)) from None
        return cls(
            commit=commit,
            complete=complete,
            files=tuple(sorted(files, key=lambda f: f.path)),
            listing=listing,
        )


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

    def commit(self, commit: str) -> IndexedCommit:
        for c in self.commits:
            if c.commit == commit:
                return c
        raise KeyError(commit)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.key.to_json()
        if self.hf_id is not None:  # written only when set: bundles without it stay byte-identical
            data["hf_id"] = self.hf_id
        data["revisions"] = [{"name": name, "commit": commit} for name, commit in self.revisions]
        data["commits"] = [c.to_json() for c in self.commits]
        return data

    @classmethod
    def from_json(cls, data: Any) -> IndexedRepo:
        source = _field(data, "source", str, "repo entry")
        if not _SOURCE.match(source):
            raise _bad(f"invalid source {source!r}")
        repo_type = _field(data, "repo_type", str, "repo entry")
        if repo_type not in REPO_TYPES:
            raise _bad(f"invalid repo type {repo_type!r}")
        repo_id = check_repo_id(_field(data, "repo_id", str, "repo entry"))
        hf_id = None
        if "hf_id" in data:
            hf_id = _field(data, "hf_id", str, repo_id)
            try:
                check_repo_id(hf_id)
            except IntegrityError:
                raise _bad(f"{repo_id} has an invalid hf_id {hf_id!r}") from None
        commits = tuple(IndexedCommit.from_json(c) for c in _field(data, "commits", list, repo_id))
        known = {c.commit for c in commits}
        if len(known) != len(commits):
            raise _bad(f"{repo_id} lists a commit twice")
        revisions: list[tuple[str, str]] = []
        for rev in _field(data, "revisions", list, repo_id):
            name = _check_name(_field(rev, "name", str, f"{repo_id} revision"), "revision name")
            commit = check_commit(_field(rev, "commit", str, f"{repo_id} revision {name}"))
            if commit not in known:
                raise _bad(f"{repo_id} revision {name} points at commit {commit}, which the bundle lacks")
            if any(name == n for n, _ in revisions):
                raise _bad(f"{repo_id} lists revision {name} twice")
            if is_commit(name) and name != commit:
                raise _bad(f"{repo_id} revision {name} looks like a commit but points at {commit}")
            revisions.append((name, commit))
        if not revisions:
            raise _bad(f"{repo_id} has no revision")
        # refs/<name> (and modelscope's snapshots/<name>): `v` and `v/x` cannot both be there, as in git.
        for folder, name in nested_names(n for n, _ in revisions):
            raise _bad(f"{repo_id} revision {name!r} lies inside revision {folder!r}")
        for name, _ in revisions:
            _check_publishable(name, f"{repo_id} revision {name!r}")
        if known - {c for _, c in revisions}:
            raise _bad(f"{repo_id} holds a commit no revision names")
        return cls(
            source=source,
            repo_type=repo_type,
            repo_id=repo_id,
            revisions=tuple(revisions),
            commits=tuple(sorted(commits, key=lambda c: c.commit)),
            hf_id=hf_id,
        )


@dataclass(frozen=True)
class Chunk:
    """One piece of a content larger than a volume: which volume packs it, its size and its own sha256."""

    volume: int
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"volume": self.volume, "size": self.size, "sha256": self.sha256}


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

    @classmethod
    def from_json(cls, data: Any) -> VolumeSet:
        what = "volume_set"
        set_id = _field(data, "id", str, what)
        if not is_sha256(set_id):
            raise _bad(f"invalid volume set id {set_id!r}")
        names = _field(data, "names", list, what)
        for name in names:
            if not isinstance(name, str) or "/" in name or not is_safe_relpath(name):
                raise _bad(f"invalid volume name {name!r}")
        if not names or len(set(names)) != len(names):
            raise _bad("the volume names are empty or repeated")
        volume = _field(data, "volume", int, what)
        if not 1 <= volume <= len(names):
            raise _bad(f"volume {volume} is not one of the set's {len(names)}")
        return cls(set_id, volume, tuple(names))


def _placement_from_json(data: dict[str, Any], record: FileRecord, volumes: VolumeSet | None) -> Placement:
    what = f"file {record.path!r}"
    given = [k for k in ("in_target", "volume", "chunks") if k in data]
    if len(given) > 1:
        raise _bad(f"{what} has more than one of {', '.join(given)}")
    if not given:
        if volumes is not None:
            raise _bad(f"{what} says neither which volume packs it nor that the target holds it")
        return PACKED_HERE
    if given == ["in_target"]:
        if data["in_target"] is not True:
            raise _bad(f"{what}: 'in_target' must be true when present")
        return IN_TARGET
    if volumes is None:
        raise _bad(f"{what} names a volume, but the bundle is not a volume of a set")
    count = len(volumes.names)
    if given == ["volume"]:
        volume = _field(data, "volume", int, what)
        if not 1 <= volume <= count:
            raise _bad(f"{what} is in volume {volume}, not one of the set's {count}")
        return Placement(volume=volume)
    pieces = _field(data, "chunks", list, what)
    chunks = []
    for piece in pieces:
        volume = _field(piece, "volume", int, f"{what} chunk")
        size = _field(piece, "size", int, f"{what} chunk")
        sha = _field(piece, "sha256", str, f"{what} chunk")
        if not 1 <= volume <= count or size <= 0 or not is_sha256(sha):
            raise _bad(f"{what} has an invalid chunk {piece!r}")
        chunks.append(Chunk(volume, size, sha))
    if not chunks or sum(c.size for c in chunks) != record.size:
        raise _bad(f"{what}: its chunks do not add up to its {record.size} bytes")
    return Placement(chunks=tuple(chunks))


@dataclass(frozen=True)
class BundleIndex:
    """The parsed, validated `MIRROR-BUNDLE.json`.

    `placements` maps a content's sha256 to where it is, for content the bundle does not pack itself (a
    delta's `in_target`, a volume set's volumes); `volume_set` is set on a volume of a set.
    """

    created: str
    repos: tuple[IndexedRepo, ...]
    tool_version: str = __version__
    tool: str = "mirror"
    placements: Mapping[str, Placement] = field(default_factory=dict)
    volume_set: VolumeSet | None = None

    def placement(self, sha256: str) -> Placement:
        return self.placements.get(sha256, PACKED_HERE)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
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
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise IntegrityError(f"not a mirror bundle: the first member is not a {FORMAT} index")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _bad(f"invalid format_version {version!r}")
        if version != FORMAT_VERSION:
            raise IntegrityError(
                f"bundle format version {version!r} is not supported (this mirror reads {FORMAT_VERSION}); "
                "upgrade mirror on this machine"
            )
        created = _field(data, "created", str, "index")
        if parse_iso(created) is None:
            raise _bad(f"invalid creation time {created!r}")
        repos = tuple(IndexedRepo.from_json(r) for r in _field(data, "repos", list, "index"))
        if len({r.key for r in repos}) != len(repos):
            raise _bad("a repo is listed twice")
        volume_set = VolumeSet.from_json(data["volume_set"]) if "volume_set" in data else None
        placements: dict[str, Placement] = {}
        for repo in data["repos"]:  # the same objects IndexedRepo.from_json checked above
            for commit in repo["commits"]:
                for f in commit["files"]:
                    record = FileRecord.from_json(f)
                    placement = _placement_from_json(f, record, volume_set)
                    if placements.setdefault(record.sha256, placement) != placement:
                        raise _bad(f"files with the content {record.sha256} are placed differently")
        index = cls(
            created=created,
            repos=tuple(sorted(repos, key=lambda r: r.key)),
            tool_version=_field(data, "tool_version", str, "index"),
            tool=_field(data, "tool", str, "index"),
            placements={sha: p for sha, p in sorted(placements.items()) if p != PACKED_HERE},
            volume_set=volume_set,
        )
        if volume_set is not None and index.set_id() != volume_set.id:
            raise _bad("the volume set id does not match the index (a damaged or altered volume)")
        names = [m.name for m in iter_members(index)]
        if len(set(names)) != len(names):
            raise _bad("two files share a member name (a model and a dataset with the same id and commit?)")
        return index


class BundleMember(NamedTuple):
    """A file member, as `iter_members` names and orders it.

    A chunk member (`chunk` is its number in the placement's chunks, from 0) carries one piece of `file`'s
    content (`size` and `sha256` are the piece's); `file`, `repo` and `commit` are then the first file with
    that content.
    """

    name: str
    file: FileRecord
    repo: IndexedRepo
    commit: IndexedCommit
    link_to: str | None  # the earlier member that carries the same content, if any
    size: int
    sha256: str
    chunk: int | None = None


def member_name(source: str, repo_id: str, commit: str, path: str) -> str:
    return f"repos/{source}/{repo_id}/{commit}/{path}"


def chunk_name(sha256: str, number: int, count: int) -> str:
    """`chunks/<sha256>/001`: numbered from 1, zero-padded so that `cat chunks/<sha256>/*` joins them."""
    return f"chunks/{sha256}/{number + 1:0{max(3, len(str(count)))}d}"


def iter_members(index: BundleIndex) -> Iterator[BundleMember]:
    """The file members in archive order (sorted by name); repeated content links to its first member.

    Only what this bundle packs: not content a delta leaves in the target, nor what other volumes pack.
    """
    this = index.volume_set.volume if index.volume_set is not None else None
    found: list[BundleMember] = []
    chunked: set[str] = set()
    for repo in index.repos:
        for c in repo.commits:
            for f in c.files:
                placement = index.placement(f.sha256)
                if placement.chunks:
                    if f.sha256 in chunked:
                        continue
                    chunked.add(f.sha256)
                    count = len(placement.chunks)
                    found += [
                        BundleMember(chunk_name(f.sha256, i, count), f, repo, c, None, p.size, p.sha256, i)
                        for i, p in enumerate(placement.chunks)
                        if p.volume == this
                    ]
                elif not placement.in_target and placement.volume == this:
                    name = member_name(repo.source, repo.repo_id, c.commit, f.path)
                    found.append(BundleMember(name, f, repo, c, None, f.size, f.sha256))
    first: dict[str, str] = {}
    for m in sorted(found, key=lambda m: m.name):
        if m.chunk is not None:
            yield m
            continue
        link = first.setdefault(m.sha256, m.name)
        yield m._replace(link_to=None if link == m.name else link)


def chunk_offset(index: BundleIndex, member: BundleMember) -> int:
    """Where a chunk member's bytes start in its file's content."""
    assert member.chunk is not None
    return index.placement(member.file.sha256).offsets[member.chunk]


def sums_text(index: BundleIndex) -> bytes:
    """SHA256SUMS: one `sha256sum -c` line per file member, in member order."""
    return "".join(f"{m.sha256}  {m.name}\n" for m in iter_members(index)).encode("utf-8")


def describe_index(index: BundleIndex) -> dict[str, Any]:
    """What a bundle holds, JSON-friendly (`mirror inspect --json`)."""
    repos = []
    for repo in index.repos:
        repos.append(
            {
                **repo.key.to_json(),
                **({"hf_id": repo.hf_id} if repo.hf_id is not None else {}),
                "revisions": [{"name": n, "commit": c} for n, c in repo.revisions],
                "commits": [
                    {"commit": c.commit, "complete": c.complete, "files": len(c.files), "bytes": c.size}
                    for c in repo.commits
                ],
                "files": sum(len(c.files) for c in repo.commits),
                "bytes": sum(c.size for c in repo.commits),
            }
        )
    members = list(iter_members(index))
    data: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool": index.tool,
        "tool_version": index.tool_version,
        "created": index.created,
        "repos": repos,
        "files": len(members),
        "total_bytes": sum(m.size for m in members),
        "unique_bytes": sum(m.size for m in members if m.link_to is None),
    }
    # Only for deltas and volumes, so a plain bundle's description is as it always was.
    if index.volume_set is not None:
        data["volume_set"] = index.volume_set.to_json()
    elsewhere = [
        f for r in index.repos for c in r.commits for f in c.files if index.placement(f.sha256).in_target
    ]
    if elsewhere:
        data["in_target"] = {"files": len(elsewhere), "bytes": sum(f.size for f in elsewhere)}
    return data
