"""Bundle v1: write, read and verify the checksummed `.tar.zst` that carries repos across the air gap.

A bundle is a plain zstd-compressed POSIX tar (DESIGN.md, "Bundle v1"):

    MIRROR-BUNDLE.json                          the index: repos, revisions -> commit, files with hashes
    SHA256SUMS                                  `sha256sum -c` lines for every file member below
    chunks/<sha256>/<NNN>                       pieces of a file larger than a volume (volumes only)
    repos/<source>/<repo_id>/<commit>/<path>    the files, sorted; repeated content is a tar hardlink

The index always describes every file of every repo revision. Two optional additions (absent from a
plain bundle, which stays byte-identical) say where a file's content is when the bundle does not pack it
itself, per file: `"in_target": true` (a delta: the target must already hold it), `"volume": N` or
`"chunks": [...]` (a volume of a set: which volume packs it, or its pieces), with the set described by
the top-level `"volume_set"`. See `Placement` and `VolumeSet`.

`iter_members` is the one place that names and orders the file members: the writer, the verifier and
the importers all walk it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property, partial
from itertools import accumulate
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol, cast

import zstandard

from mirror import __version__
from mirror.errors import IntegrityError, MirrorError
from mirror.frames import FRAME, Block, Buffer, FrameReader, FrameWalker, FrameWriter, workers_for
from mirror.fsutil import atomic_write_bytes, temp_sibling
from mirror.hashing import CHUNK
from mirror.paths import check_commit, check_relpath, check_repo_id, is_commit, is_safe_relpath, is_sha256
from mirror.snapshot import FileRecord, Snapshot
from mirror.store import RepoKey, Store

INDEX_NAME = "MIRROR-BUNDLE.json"
SUMS_NAME = "SHA256SUMS"
FORMAT = "mirror-bundle"
FORMAT_VERSION = 1
MAX_INDEX_SIZE = 64 << 20
REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCHES = ("main", "master")

# After the tar's end-of-archive blocks only zero padding may follow; a little more than one tar record.
_MAX_TRAILING = 1 << 20
# tarfile reads a pax or GNU long-name header's data whole into memory: a crafted 10 GB one would exhaust it.
# mirror writes pax headers only for long paths (at most 4096 bytes each), so this is ample.
MAX_EXTENDED_HEADER = 64 << 10
_SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_OID = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)

Progress = Callable[[int], None]


class ModelSpecLike(Protocol):
    """What selection needs of a manifest entry (mirror.manifest.ModelSpec)."""

    @property
    def repo(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def repo_type(self) -> str: ...

    @property
    def revisions(self) -> tuple[str, ...]: ...

    @property
    def hf_id(self) -> str | None: ...

    def wants(self, path: str) -> bool: ...


# --------------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------------


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


def _file_from_json(data: Any) -> FileRecord:
    what = "file record"
    path = _field(data, "path", str, what)
    _field(data, "size", int, f"file {path!r}")
    _field(data, "sha256", str, f"file {path!r}")
    oid = _field(data, "oid", str, f"file {path!r}")
    _field(data, "lfs", bool, f"file {path!r}")
    record = FileRecord.from_json(data)
    _check_name(record.path, "file path")
    if not _OID.match(oid):
        raise _bad(f"file {path!r} has an invalid oid {oid!r}")
    return record


@dataclass(frozen=True)
class IndexedCommit:
    """One commit of a repo in a bundle: its files, and whether they are every file upstream has there."""

    commit: str
    complete: bool
    files: tuple[FileRecord, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "complete": self.complete, "files": [f.to_json() for f in self.files]}

    @classmethod
    def from_json(cls, data: Any) -> IndexedCommit:
        commit = check_commit(_field(data, "commit", str, "commit entry"))
        complete = _field(data, "complete", bool, f"commit {commit}")
        files = tuple(_file_from_json(f) for f in _field(data, "files", list, f"commit {commit}"))
        paths = {f.path for f in files}
        if len(paths) != len(files):
            raise _bad(f"commit {commit} lists a path twice")
        for f in files:
            parts = f.path.split("/")
            # A file that is also a folder of another file cannot exist on disk.
            if any("/".join(parts[:i]) in paths for i in range(1, len(parts))):
                raise _bad(f"commit {commit}: {f.path!r} lies inside another file")
        return cls(commit=commit, complete=complete, files=tuple(sorted(files, key=lambda f: f.path)))


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
        data: dict[str, Any] = {"source": self.source, "repo_type": self.repo_type, "repo_id": self.repo_id}
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
        if _parse_iso(created) is None:
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


def sums_text(index: BundleIndex) -> bytes:
    """SHA256SUMS: one `sha256sum -c` line per file member, in member order."""
    return "".join(f"{m.sha256}  {m.name}\n" for m in iter_members(index)).encode("utf-8")


def describe_index(index: BundleIndex) -> dict[str, Any]:
    """What a bundle holds, JSON-friendly (`mirror inspect --json`)."""
    repos = []
    for repo in index.repos:
        repos.append(
            {
                "source": repo.source,
                "repo_type": repo.repo_type,
                "repo_id": repo.repo_id,
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


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(_ISO_FORMAT)


def _parse_iso(value: str) -> int | None:
    try:
        return int(datetime.strptime(value, _ISO_FORMAT).replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# Selection: what of the store goes into a bundle
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoSelection:
    """A repo to pack: revision names -> commits in order, and each commit's (possibly filtered) files.

    A snapshot whose files a filter thinned out has `complete=False`. `hf_id` is the manifest's `hf_id:`
    (the repo's id in the Hugging Face cache, for repos from another hub), None when it has none.
    """

    key: RepoKey
    revisions: tuple[tuple[str, str], ...]
    snapshots: tuple[Snapshot, ...]
    hf_id: str | None = None


def _order_refs(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [b for b in DEFAULT_BRANCHES if b in names] + sorted(names - set(DEFAULT_BRANCHES))


def _missing_snapshot(key: RepoKey, name: str, commit: str) -> MirrorError:
    return MirrorError(
        f"{key}: revision {name} points at commit {commit}, but the store has no record of its files; "
        "run `mirror sync` again or `mirror verify` to check the store"
    )


def select_all(store: Store) -> list[RepoSelection]:
    """Every repo of the store, every revision name it synced (main/master first), every file."""
    selection = []
    for key in store.repos():
        refs = store.read_refs(key)
        if not refs:
            continue
        revisions = tuple((name, refs[name].commit) for name in _order_refs(refs))
        snapshots = []
        for commit in sorted({c for _, c in revisions}):
            snap = store.read_snapshot(key, commit)
            if snap is None:
                raise _missing_snapshot(key, next(n for n, c in revisions if c == commit), commit)
            snapshots.append(snap)
        selection.append(RepoSelection(key, revisions, tuple(snapshots)))
    return selection


def select_specs(store: Store, specs: Iterable[ModelSpecLike]) -> list[RepoSelection]:
    """The revisions the specs name, as the store resolved them, with each spec's file filter applied.

    Several specs for one repo are merged: their revisions in order of first mention, and a commit keeps
    every file that any spec naming it wants.
    """
    revisions: dict[RepoKey, dict[str, str]] = {}
    wanted: dict[RepoKey, dict[str, set[str]]] = {}
    snaps: dict[RepoKey, dict[str, Snapshot]] = {}
    hf_ids: dict[RepoKey, str] = {}
    for spec in specs:
        key = RepoKey(spec.source, spec.repo_type, spec.repo)
        hf_id = spec.hf_id
        if hf_id is not None and hf_ids.setdefault(key, hf_id) != hf_id:
            raise MirrorError(
                f"{key}: the manifests give it two hf_id values ({hf_ids[key]} and {hf_id}); keep one"
            )
        refs = store.read_refs(key)
        for name in spec.revisions:
            if name in refs:
                commit = refs[name].commit
            elif is_commit(name) and store.read_snapshot(key, name) is not None:
                commit = name
            else:
                raise MirrorError(
                    f"{key}: revision {name} was never synced into the store {store.root}; "
                    "run `mirror sync` with a manifest that names it first"
                )
            repo_snaps = snaps.setdefault(key, {})
            if commit not in repo_snaps:
                snap = store.read_snapshot(key, commit)
                if snap is None:
                    raise _missing_snapshot(key, name, commit)
                repo_snaps[commit] = snap
            revisions.setdefault(key, {}).setdefault(name, commit)
            paths = wanted.setdefault(key, {}).setdefault(commit, set())
            paths.update(f.path for f in repo_snaps[commit].files if spec.wants(f.path))
    selection = []
    for key in sorted(revisions):
        snapshots = []
        for commit, snap in sorted(snaps[key].items()):
            files = tuple(f for f in snap.files if f.path in wanted[key][commit])
            snapshots.append(
                Snapshot(
                    source=snap.source,
                    repo_type=snap.repo_type,
                    repo_id=snap.repo_id,
                    commit=snap.commit,
                    files=files,
                    complete=snap.complete and len(files) == len(snap.files),
                    synced_at=snap.synced_at,
                )
            )
        selection.append(
            RepoSelection(key, tuple(revisions[key].items()), tuple(snapshots), hf_id=hf_ids.get(key))
        )
    return selection


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleSummary:
    """What `write_bundle` wrote. `files` counts file members; `unique_bytes` the content stored once."""

    path: Path
    sha256: str
    size: int
    files: int
    unique_bytes: int
    repos: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "files": self.files,
            "unique_bytes": self.unique_bytes,
            "repos": self.repos,
        }


def build_index(
    store: Store,
    selection: Iterable[RepoSelection],
    *,
    created: int | None = None,
    have: Mapping[str, int] | None = None,
) -> BundleIndex:
    """The index of a bundle holding `selection`, validated as a reader would.

    `created` (unix seconds; the CLI passes SOURCE_DATE_EPOCH) defaults to the newest sync of what is
    selected, never the clock, so the same store gives the same bundle. `have` (sha256 -> size: what the
    far side already holds, from `mirror inventory` or earlier bundles) makes a delta: files with that
    content are described but marked `in_target` instead of packed.
    """
    repos = []
    stamps: list[str] = []
    for sel in selection:
        if len({s.commit for s in sel.snapshots}) != len(sel.snapshots):
            raise MirrorError(f"{sel.key}: the selection lists a commit twice")
        repos.append(
            IndexedRepo(
                source=sel.key.source,
                repo_type=sel.key.repo_type,
                repo_id=sel.key.repo_id,
                revisions=sel.revisions,
                hf_id=sel.hf_id,
                commits=tuple(
                    IndexedCommit(s.commit, s.complete, tuple(sorted(s.files, key=lambda f: f.path)))
                    for s in sorted(sel.snapshots, key=lambda s: s.commit)
                ),
            )
        )
        refs = store.read_refs(sel.key)
        stamps += [s.synced_at for s in sel.snapshots]
        stamps += [refs[name].synced_at for name, _ in sel.revisions if name in refs]
    if not repos:
        raise MirrorError("nothing to pack: the selection is empty; run `mirror sync MANIFEST` first")
    if created is None:
        created = max((t for t in map(_parse_iso, stamps) if t is not None), default=0)
    if not 0 <= created < 253402300800:  # up to 9999-12-31, what the ISO form can say
        raise MirrorError(
            f"invalid bundle creation time {created} (want unix seconds, e.g. SOURCE_DATE_EPOCH)"
        )
    placements = {
        f.sha256: IN_TARGET
        for repo in repos
        for c in repo.commits
        for f in c.files
        if have is not None and have.get(f.sha256) == f.size
    }
    index = BundleIndex(
        created=_iso(created), repos=tuple(sorted(repos, key=lambda r: r.key)), placements=placements
    )
    # Never write what a reader would refuse.
    return BundleIndex.from_json(index.to_json())


# The blobs are read and hashed in a thread of their own (`_BlobReader`), in blocks of one zstd frame, which
# `FrameWriter`'s workers compress straight from the reader's buffers; the main thread hashes and writes the
# frames in order. hashlib, zstd and file I/O release the GIL, so on 2 cores these overlap. A few buffers
# are used in turn: memory stays flat whatever the bundle holds.
_BLOCK = FRAME
# The level of the data of a model's weights, unless `--level` says otherwise: their bytes are near random,
# so zstd finds few matches, and level 1 gives the smallest output as well as the fastest (bf16 safetensors:
# 0.7769 of the size at level 1, 0.7771 at level 3, at 1.4 times the speed). Other data keeps DEFAULT_LEVEL.
DEFAULT_LEVEL = 3
WEIGHTS_LEVEL = 1
WEIGHTS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".gguf",
    ".npy",
)
# How often the output written so far is handed to the disk while the bundle is written, so that the final
# fsync has little left to do.
_WRITEBACK_SECONDS = 0.25
_datasync = getattr(os, "fdatasync", os.fsync)


class _HashingWriter:
    """Passes the compressed bytes to the file, hashing and counting them, while a thread syncs the file as
    it grows. Use as a context manager: leaving it stops that thread."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._done = threading.Event()
        self._syncer = threading.Thread(target=self._sync_often, name="mirror-bundle-sync", daemon=True)
        self._syncer.start()

    def write(self, data: bytes | memoryview) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._syncer.join()

    def _sync_often(self) -> None:
        fd = self._raw.fileno()
        while not self._done.wait(_WRITEBACK_SECONDS):
            try:
                _datasync(fd)
            except OSError:
                return  # the final fsync reports it


class _BlobReader:
    """Reads the data members' store blobs in archive order, from a thread of its own, in large blocks, and
    checks each member's bytes against its hash (a damaged store fails the export, not the import).

    `blocks()` gives the next member's bytes: its blocks must be taken in order, whole. The blocks are views
    of `buffers` buffers used in turn (no allocation, so no page faults, per block): give each back with
    `release` once it is used. Use as a context manager: leaving it stops the thread.
    """

    def __init__(
        self, store: Store, index: BundleIndex, members: Iterable[BundleMember], buffers: int
    ) -> None:
        self._store = store
        self._index = index
        self._members = [m for m in members if m.link_to is None]
        self._full: queue.Queue[memoryview | BaseException | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self._free.put(bytearray(_BLOCK))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_all, name="mirror-bundle-read", daemon=True)
        self._thread.start()

    def blocks(self) -> Iterator[memoryview]:
        """The next member's bytes."""
        while (item := self._full.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def release(self, block: memoryview) -> None:
        """Give a block's buffer back for the blocks to come."""
        self._free.put(cast(bytearray, block.obj))

    def __enter__(self) -> _BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _buffer(self) -> bytearray | None:
        """A free buffer, once there is one; None once stopped."""
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _read_all(self) -> None:
        for m in self._members:
            failure: BaseException | None
            try:
                failure = self._read(m)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
                failure = e
            self._full.put(failure)
            if failure is not None:
                return

    def _read(self, m: BundleMember) -> IntegrityError | None:
        """Put `m`'s blocks on the queue; what is wrong with them, if anything."""
        sha256 = hashlib.sha256()
        left = m.size
        with open(self._store.blob_path(m.file.sha256), "rb", buffering=0) as blob:
            if m.chunk is not None:
                blob.seek(chunk_offset(self._index, m))
            while left:
                if (buf := self._buffer()) is None:
                    return None
                view = memoryview(buf)[: min(_BLOCK, left)]
                n = blob.readinto(view)
                if not n:
                    return IntegrityError(
                        f"store blob {m.file.sha256} shrank while packing; run `mirror verify`"
                    )
                sha256.update(view[:n])
                left -= n
                self._full.put(view[:n])
        if sha256.hexdigest() != m.sha256:
            what = "" if m.chunk is None else f" chunk {m.chunk + 1}"
            return IntegrityError(
                f"store blob {m.file.sha256}{what} ({m.repo.key} {m.file.path}) does not match its hash; "
                "run `mirror verify` and `mirror sync` to repair the store"
            )
        return None


class _TarWriter:
    """Writes a tar stream byte for byte as `tarfile.open(mode="w|", format=PAX_FORMAT)` would, as zstd frames:
    headers, padding and small files gathered, each large file's data in frames of its own."""

    def __init__(self, frames: FrameWriter) -> None:
        self._frames = frames

    def member(
        self,
        info: tarfile.TarInfo,
        data: bytes = b"",
        blobs: _BlobReader | None = None,
        level: int = DEFAULT_LEVEL,
        progress: Progress | None = None,
    ) -> None:
        """Add a member: its header, then its data (`data`, or `info.size` bytes from `blobs`), padded to a
        tar block. Data of a frame's size or more goes in frames of its own, at `level`."""
        frames = self._frames
        frames.write(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        frames.write(data)
        size = len(data)
        for block in blobs.blocks() if blobs is not None else ():
            assert blobs is not None
            size += len(block)
            if info.size >= _BLOCK:
                frames.frame(block, level, partial(blobs.release, block))
            else:
                frames.write(block)
                blobs.release(block)
            if progress is not None:
                progress(len(block))
        if size != info.size:  # a bug, never the store: the reader gives each member's size
            raise MirrorError(f"{info.name}: {size} bytes packed for {info.size}")
        if size % tarfile.BLOCKSIZE:
            frames.write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        """End the archive (two zero blocks, zero-filled to a whole record) and the last frame."""
        self._frames.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if self._frames.offset % tarfile.RECORDSIZE:
            self._frames.write(tarfile.NUL * (tarfile.RECORDSIZE - self._frames.offset % tarfile.RECORDSIZE))
        self._frames.close()


def data_level(path: str, level: int | None) -> int:
    """The zstd level of a file's data: `level` when given, else by what the file holds."""
    if level is not None:
        return level
    return WEIGHTS_LEVEL if path.lower().endswith(WEIGHTS_SUFFIXES) else DEFAULT_LEVEL


def _tarinfo(name: str, mtime: int, size: int = 0, link_to: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if link_to is not None:
        info.type = tarfile.LNKTYPE
        info.linkname = link_to
    return info


def write_bundle(
    store: Store,
    selection: list[RepoSelection],
    out: Path,
    *,
    level: int | None = None,
    threads: int = -1,
    created: int | None = None,
    have: Mapping[str, int] | None = None,
    progress: Progress | None = None,
) -> BundleSummary:
    """Pack `selection` into `out` (a `.tar.zst`) and write `out.sha256` beside it.

    With `have` (see `build_index`), content the far side holds is described but not packed (a delta).
    `progress` gets the bytes of each file member as it is packed (hardlinked ones at once).
    """
    index = build_index(store, selection, created=created, have=have)
    return write_archive(store, index, Path(out), level=level, threads=threads, progress=progress)


def chunk_offset(index: BundleIndex, member: BundleMember) -> int:
    """Where a chunk member's bytes start in its file's content."""
    assert member.chunk is not None
    return index.placement(member.file.sha256).offsets[member.chunk]


def write_archive(
    store: Store,
    index: BundleIndex,
    out: Path,
    *,
    level: int | None = None,
    threads: int = -1,
    progress: Progress | None = None,
    limit: int | None = None,
) -> BundleSummary:
    """Write the bundle (or volume) `index` describes to `out`, and `out.sha256` beside it.

    The bundle is written under a temp name and renamed into place, so `out` is a whole bundle or absent.
    Every blob is re-hashed as it is packed: a damaged store fails the export instead of the import.
    `limit` (a volume's size) is checked against the result before it takes `out`'s name.
    """
    out = Path(out)
    mtime = _parse_iso(index.created) or 0
    members = list(iter_members(index))
    for m in members:
        if m.link_to is None and not store.has_blob(m.file.sha256, m.file.size):
            raise MirrorError(
                f"{m.repo.key}@{m.commit.commit}: the store lacks {m.file.path} ({m.file.sha256}); "
                "run `mirror sync` again or `mirror verify` to check the store"
            )
    workers = workers_for(threads)
    tmp = temp_sibling(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as raw:
            with (
                _HashingWriter(raw) as sink,
                # a buffer per frame in flight (see FrameWriter), one being read, one ready
                _BlobReader(store, index, members, workers + 4) as blobs,
                FrameWriter(sink.write, DEFAULT_LEVEL if level is None else level, workers) as frames,
            ):
                tar = _TarWriter(frames)
                index_bytes = index.to_bytes()
                tar.member(_tarinfo(INDEX_NAME, mtime, len(index_bytes)), index_bytes)
                sums = sums_text(index)
                tar.member(_tarinfo(SUMS_NAME, mtime, len(sums)), sums)
                for m in members:
                    if m.link_to is not None:
                        tar.member(_tarinfo(m.name, mtime, link_to=m.link_to))
                        if progress is not None and m.size:
                            progress(m.size)
                        continue
                    level_here = data_level(m.file.path, level)
                    tar.member(
                        _tarinfo(m.name, mtime, m.size), blobs=blobs, level=level_here, progress=progress
                    )
                tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        digest = sink.sha256.hexdigest()
        if limit is not None and sink.size > limit:
            raise MirrorError(
                f"{out.name} came out at {sink.size} bytes, over the volume size {limit}; this is a bug in "
                "mirror's volume planning, please report it (export with a smaller --split meanwhile)"
            )
        side = out.with_name(out.name + ".sha256")
        side.unlink(missing_ok=True)  # a stale digest must not sit beside the new bundle
        os.replace(tmp, out)
        atomic_write_bytes(side, f"{digest}  {out.name}\n".encode())
    except OSError as e:
        raise MirrorError(f"writing the bundle {out} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return BundleSummary(
        path=out,
        sha256=digest,
        size=sink.size,
        files=len(members),
        unique_bytes=sum(m.size for m in members if m.link_to is None),
        repos=len(index.repos),
    )


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


_KINDS = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hardlink",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
    tarfile.DIRTYPE: "a directory",
    tarfile.CONTTYPE: "a contiguous file",
}


def _kind(info: tarfile.TarInfo) -> str:
    return _KINDS.get(info.type, f"of tar type {info.type!r}")


class _GuardedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses, before tarfile reads their data, the headers mirror never writes or that
    tarfile would read whole into memory: oversized pax or GNU long-name headers, global pax headers and
    sparse files (whose maps tarfile also reads whole)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if not 0 <= self.size <= MAX_EXTENDED_HEADER:
                raise IntegrityError(
                    f"tar header {self.name!r} announces a {self.size}-byte extended header "
                    f"(limit {MAX_EXTENDED_HEADER}); refusing it"
                )
        elif self.type in (tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_SPARSE):
            raise IntegrityError(
                f"tar header {self.name!r} of type {self.type!r} is not used by mirror; refusing it"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc, no-any-return]

    def _refuse_sparse(self, *args: object) -> None:
        raise IntegrityError(f"tar header {self.name!r} describes a sparse file; refusing it")

    # Called from _proc_pax on the member a pax header describes, before its sparse map is read.
    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


# Reading is several threads: one reads the bundle file and hands its zstd frames to a pool that decompresses
# them (see FrameReader), one hashes the compressed bytes, and the caller's parses the tar stream and hashes
# and writes the members' data. zstd, hashlib and file I/O release the GIL, so on two cores they overlap.
# The decompressed stream moves in blocks of up to a frame, at most _AHEAD of them waiting: memory stays flat
# whatever the bundle holds.
_INFLATE = FRAME
_AHEAD = 4


def _put(q: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Put item on a bounded queue unless stop is set first (the reader went away); whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _RawReader:
    """Reads the bundle file for the decompressor, following its frames; with `digest`, a thread of its own
    hashes it."""

    def __init__(self, raw: IO[bytes], stop: threading.Event, digest: bool) -> None:
        self._raw = raw
        self._stop = stop
        self._sha256 = hashlib.sha256()
        self._pending: queue.Queue[bytes | None] = queue.Queue(_AHEAD)
        self._hasher: threading.Thread | None = None
        if digest:
            self._hasher = threading.Thread(target=self._hash, name="mirror-bundle-hash", daemon=True)
            self._hasher.start()
        self.walker = FrameWalker()
        self.size = 0
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        if self._stop.is_set():
            return b""  # the reader went away: end the decompressor's pass
        data = self._raw.read(n)
        self.eof = not data and n != 0
        if data:
            if self._hasher is not None:
                _put(self._pending, data, self._stop)
            self.walker.feed(data)
            self.size += len(data)
        return data

    def _hash(self) -> None:
        while (data := self._pending.get()) is not None:
            self._sha256.update(data)

    def close(self) -> None:
        """Stop the hashing thread (once it has hashed what it was given)."""
        if self._hasher is not None and self._hasher.is_alive():
            self._pending.put(None)  # never blocks for long: the hasher only ever takes
            self._hasher.join()

    def hexdigest(self) -> str | None:
        """The sha256 of every byte read (None without `digest`); only once nothing more will be read."""
        if self._hasher is None:
            return None
        self.close()
        return self._sha256.hexdigest()


def _copied(views: Iterable[memoryview]) -> bytes:
    """The bytes of views of the decompressed stream, each copied before the next is taken (taking a
    block gives the one before back for reuse)."""
    out = bytearray()
    for view in views:
        out += view
    return bytes(out)


class _Inflater:
    """The decompressed tar stream, produced ahead by a thread of its own, for one consumer.

    For tarfile (which parses the headers) it is a file that only moves forward: `read`, `tell` and `seek`
    ahead. `take` hands out a member's data as views of the decompressed blocks, without copying them.
    `progress` gets the compressed bytes as the blocks they became are taken.
    """

    def __init__(self, raw: _RawReader, stop: threading.Event, progress: Progress | None) -> None:
        self._raw = raw
        self._stop = stop
        self._progress = progress
        self._blocks: queue.Queue[Block | BaseException] = queue.Queue(_AHEAD)
        self._frames = FrameReader(raw.read, raw.walker, workers_for(-1), stop)
        self._view = memoryview(b"")  # what is left of the current block
        self._buffer: Buffer | None = None  # the current block's, to recycle once it is used
        self._pos = 0
        self._reported = 0
        self._end: BaseException | None = None  # what ended the stream, once it has
        self._ended = False
        self._thread = threading.Thread(target=self._inflate, name="mirror-bundle-inflate", daemon=True)
        self._thread.start()

    def _inflate(self) -> None:
        raw = self._raw
        item: Block | BaseException
        try:
            for block in self._frames.blocks():
                if not _put(self._blocks, block, self._stop):
                    return
            while raw.read(CHUNK):  # whatever follows the last frame still counts in the bundle's sha256
                pass
            item = Block(memoryview(b""), raw.size, None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            item = e
        finally:
            self._frames.close()
        _put(self._blocks, item, self._stop)

    def close(self) -> None:
        """Stop the thread; the stream is unusable after."""
        self._stop.set()
        while True:  # free the thread if it waits for room, and the blocks' memory
            try:
                self._blocks.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def _next_block(self) -> bool:
        if self._ended:
            if self._end is not None:
                raise self._end
            return False
        item = self._blocks.get()
        if isinstance(item, BaseException):
            self._ended, self._end = True, item
            raise item
        if self._buffer is not None:  # the block before is used: the frame reader may fill its buffer again
            self._frames.recycle(self._buffer)
        data, raw_size, self._buffer = item
        if self._progress is not None and raw_size > self._reported:
            self._progress(raw_size - self._reported)
            self._reported = raw_size
        self._view = data
        self._ended = not data
        return bool(data)

    def take(self, n: int) -> Iterator[memoryview]:
        """The next n bytes, as views of the blocks in order; fewer only where the stream ends."""
        while n > 0:
            if not self._view and not self._next_block():
                return
            view = self._view[:n]
            self._view = self._view[len(view) :]
            self._pos += len(view)
            n -= len(view)
            yield view

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("the bundle stream is read in bounded pieces")
        return _copied(self.take(n))

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self._pos:
            raise ValueError("the bundle stream only moves forward")
        for _ in self.take(pos - self._pos):
            pass
        return self._pos


class BundleFile:
    """A file member met while streaming a bundle; `read` checks it against the index."""

    def __init__(
        self, reader: BundleReader, member: BundleMember, info: tarfile.TarInfo, failed_link: str | None
    ) -> None:
        self.member = member
        self._reader = reader
        self._info = info
        self._failed_link = failed_link
        self._read = False
        self.verified = False

    @property
    def link_to(self) -> str | None:
        """For a hardlink member: the earlier member whose (verified) content this one repeats."""
        return self._info.linkname if self._info.islnk() else None

    def read(self, sink: Callable[[memoryview], object] | None = None) -> None:
        """Stream the member's bytes to `sink` (exactly the size the index gives) and check their sha256.

        The pieces are views of the decompressed stream, in blocks of up to a frame: write or copy them before
        `sink` returns, their memory is used again for the blocks to come. Raises IntegrityError naming the member on a mismatch
        (the bytes already given to `sink` must then be discarded). A hardlink member has no bytes: it
        verifies when the member it links to did.
        """
        if self._read:
            raise RuntimeError(f"{self.member.name} was already read")
        self._read = True
        name, member = self.member.name, self.member
        if self.link_to is not None:
            if self._failed_link is not None:
                raise IntegrityError(
                    f"{self._reader.path}: {name}: links to {self._failed_link}, which failed verification"
                )
            self.verified = True
            return
        if self._info.size != member.size:  # files() refuses these before yielding them
            raise RuntimeError(f"{name}: size not checked")
        digest = self._reader._copy(self._info, sink)
        if digest != member.sha256:
            raise IntegrityError(
                f"{self._reader.path}: {name}: sha256 {digest} does not match the index ({member.sha256}); "
                "the bundle was damaged, copy or export it again"
            )
        self.verified = True


class BundleReader:
    """One pass over a bundle: the index on open, then the file members through `files()`."""

    def __init__(self, path: Path, raw: _RawReader, stream: _Inflater) -> None:
        self.path = path
        self._raw = raw
        self._stream = stream
        self._broken: IntegrityError | None = None
        self._started = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="mirror-bundle-write")
        self.sha256: str | None = (
            None  # the archive's own digest (if asked for), once files() has run to its end
        )
        with self._archive_errors():
            # tarfile parses the headers (through _GuardedTarInfo) from the forward-only stream; the members'
            # data, the bulk of the bytes, is taken from the stream directly (see _take), not through tarfile.
            self._tar = tarfile.open(  # noqa: SIM115 - lives as long as the reader
                fileobj=cast(IO[bytes], stream), mode="r:", tarinfo=_GuardedTarInfo
            )
        self.index = self._read_index()

    @cached_property
    def index_sha256(self) -> str:
        """The sha256 of the index's bytes: what names the bundle (and what a signature pins)."""
        return hashlib.sha256(self.index_bytes).hexdigest()

    def close(self) -> None:
        self._writer.shutdown()

    @contextmanager
    def _archive_errors(self) -> Iterator[None]:
        """Turn whatever a damaged stream raises into one IntegrityError; the stream is unusable after."""
        if self._broken is not None:
            raise self._broken
        try:
            yield
        except IntegrityError as e:
            self._broken = IntegrityError(f"{self.path}: corrupt bundle: {e}; copy or export it again")
            raise self._broken from None
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
            if self._raw.eof and not self._raw.walker.complete:
                why = "the zstd stream is cut off; the bundle is truncated"
            else:
                why = f"corrupt or truncated bundle ({e})"
            self._broken = IntegrityError(f"{self.path}: {why}; copy or export it again")
            raise self._broken from e

    def _next(self) -> tarfile.TarInfo | None:
        with self._archive_errors():
            return self._tar.next()

    def _take(self, info: tarfile.TarInfo) -> Iterator[memoryview]:
        """The current member's data: exactly its size, as views of the decompressed stream."""
        if self._stream.tell() != info.offset_data:
            raise RuntimeError(f"{info.name}: members are read in archive order, before the next one")
        remaining = info.size
        for view in self._stream.take(remaining):
            remaining -= len(view)
            yield view
        if remaining:
            raise EOFError(f"archive ends inside {info.name}")

    def _copy(self, info: tarfile.TarInfo, sink: Callable[[memoryview], object] | None) -> str:
        """Pass the current member's bytes to sink in pieces (never more than its size); their sha256."""
        digest = hashlib.sha256()
        with self._archive_errors():
            for view in self._take(info):
                # The sink writes on a thread of its own while this one hashes: both are done with the view
                # before the next is taken (which hands the view's memory back to the decompressor).
                written = self._writer.submit(sink, view) if sink is not None else None
                digest.update(view)
                if written is not None:
                    written.result()
        return digest.hexdigest()

    def _read_small(self, info: tarfile.TarInfo) -> bytes:
        with self._archive_errors():
            return _copied(self._take(info))

    def _read_index(self) -> BundleIndex:
        info = self._next()
        if info is None or info.name != INDEX_NAME or info.type not in _REGULAR:
            raise IntegrityError(f"{self.path}: not a mirror bundle (its first member is not {INDEX_NAME})")
        if info.size > MAX_INDEX_SIZE:
            raise IntegrityError(f"{self.path}: refusing a {info.size}-byte index (limit {MAX_INDEX_SIZE})")
        self.index_bytes = self._read_small(info)  # exactly what a signature pins
        try:
            data = json.loads(self.index_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise IntegrityError(f"{self.path}: {INDEX_NAME}: unreadable bundle index: {e}") from None
        try:
            return BundleIndex.from_json(data)
        except IntegrityError as e:
            raise IntegrityError(f"{self.path}: {INDEX_NAME}: {e}") from None

    def files(self) -> Iterator[BundleFile]:
        """The file members in archive order, each checked against the index.

        Raises IntegrityError for anything structural, from the tar header alone (an unsafe path, a member
        the index does not name, a duplicate, a link to a member not met before, a special file, a size the
        index disagrees with), or for a truncated or damaged stream or a `.sha256` side file that disagrees.
        A content mismatch (right size, wrong sha256) is raised by `BundleFile.read`, and the stream goes on:
        reading on is bounded by the index, and names every damaged member.
        """
        if self._started:
            raise RuntimeError("a bundle is streamed once")
        self._started = True
        expected_sums = sums_text(self.index)
        info = self._next()
        if (
            info is None
            or info.name != SUMS_NAME
            or info.type not in _REGULAR
            or info.size != len(expected_sums)
        ):
            raise IntegrityError(
                f"{self.path}: the second member must be {SUMS_NAME} listing the index's files"
            )
        if self._read_small(info) != expected_sums:
            raise IntegrityError(f"{self.path}: {SUMS_NAME} disagrees with the bundle index")
        expected = {m.name: m for m in iter_members(self.index)}
        seen: dict[str, bool] = {}  # member name -> verified
        while (info := self._next()) is not None:
            name = info.name
            member = self._check_member(info, expected, seen)
            failed_link = None
            if info.islnk():
                failed_link = None if seen[info.linkname] else info.linkname
            seen[name] = False
            file = BundleFile(self, member, info, failed_link)
            yield file
            if self._broken is not None:
                raise self._broken
            seen[name] = file.verified
        missing = [name for name in expected if name not in seen]
        if missing:
            position = {name: i for i, name in enumerate(expected)}
            last_seen = max((position[name] for name in seen), default=-1)
            if self._more_data():  # tarfile ends the archive at a header whose checksum fails
                why = "a damaged tar header ends the archive early"
            elif position[missing[0]] < last_seen:
                why = "the bundle is incomplete"
            else:
                why = "the bundle is truncated"
            raise IntegrityError(
                f"{self.path}: the archive lacks {missing[0]!r} ({len(missing)} member(s) missing): {why}; "
                "copy or export it again"
            )
        self._finish()

    def _check_member(
        self, info: tarfile.TarInfo, expected: dict[str, BundleMember], seen: dict[str, bool]
    ) -> BundleMember:
        """The index entry of a member met in the stream; IntegrityError naming it and why it is refused.

        Everything here is decided from the tar header alone, before a byte of the member's data is read:
        a member larger than the index says is refused unread (no decompression bomb).
        """
        name = info.name
        where = f"{self.path}: member {name!r}"
        if not is_safe_relpath(name):
            raise IntegrityError(
                f"{where}: an absolute or `..` path would leave the archive root; refusing it"
            )
        member = expected.get(name)
        if member is None:
            raise IntegrityError(f"{where} is not in the bundle index; refusing it")
        if name in seen:
            raise IntegrityError(f"{where} appears twice; refusing it")
        if info.islnk():
            target = info.linkname
            if not is_safe_relpath(target):
                raise IntegrityError(
                    f"{where} is a hardlink to {target!r}, outside the archive root; refusing it"
                )
            if target not in seen:
                raise IntegrityError(
                    f"{where} is a hardlink to {target!r}, not an earlier member; refusing it"
                )
            if expected[target].sha256 != member.sha256:
                raise IntegrityError(f"{where} is a hardlink to {target!r}, which holds other content")
        elif info.type not in _REGULAR:
            raise IntegrityError(
                f"{where} is {_kind(info)} (tar type {info.type!r}), not a file; refusing it"
            )
        elif info.size != member.size:
            raise IntegrityError(
                f"{where} holds {info.size} bytes but the index says {member.size}; refusing it unread "
                "(the bundle is corrupt or crafted, export it again)"
            )
        return member

    def _more_data(self) -> bool:
        """Whether anything but zeros follows where tarfile stopped (read at most one chunk)."""
        with self._archive_errors():
            rest = self._tar.fileobj
            assert rest is not None
            return bool(rest.read(CHUNK).strip(b"\0"))

    def _finish(self) -> None:
        trailing = junk = 0
        with self._archive_errors():
            rest = self._tar.fileobj
            assert rest is not None
            while chunk := rest.read(CHUNK):
                trailing += len(chunk)
                junk += len(chunk) - chunk.count(0)
                if junk or trailing > _MAX_TRAILING:
                    break
        if junk or trailing > _MAX_TRAILING:  # refused without decompressing the rest: it could be any size
            raise IntegrityError(f"{self.path}: data after the end of the archive; refusing it")
        # The stream has ended: the inflating thread has read the whole file and is done.
        if not self._raw.walker.complete:
            raise IntegrityError(
                f"{self.path}: the zstd stream is cut off; the bundle is truncated, copy it again"
            )
        self.sha256 = self._raw.hexdigest()
        if self.sha256 is not None:
            check_side_file(self.path, self.sha256)


def check_side_file(bundle: Path, sha256: str) -> None:
    """If `BUNDLE.sha256` sits beside the bundle, it must name the bundle's digest."""
    side = bundle.with_name(bundle.name + ".sha256")
    try:
        with open(side, "rb") as f:
            text = f.read(4096).decode("utf-8", "replace")
    except FileNotFoundError:
        return
    except OSError as e:
        raise MirrorError(f"cannot read {side}: {e}") from None
    fields = text.split()
    if not fields or not is_sha256(fields[0].lower()):
        raise IntegrityError(f"{side} is not a sha256sum line; remove it or copy it again")
    if fields[0].lower() != sha256:
        raise IntegrityError(
            f"{bundle}: sha256 {sha256} does not match {side.name} ({fields[0]}); "
            "the bundle changed in transfer, copy it again"
        )


@contextmanager
def open_bundle(
    bundle: Path, progress: Progress | None = None, *, archive_digest: bool = True
) -> Iterator[BundleReader]:
    """Open a bundle for one streaming pass; the index is read and validated on open.

    `progress` gets the compressed bytes as they are read, so the bundle's file size is the total. With
    `archive_digest`, the whole file is hashed too: `reader.sha256` once the members are read, checked
    against a `.sha256` beside the bundle.
    """
    bundle = Path(bundle)
    try:
        f = open(bundle, "rb", buffering=0)  # noqa: SIM115 - closed by the with below; read in CHUNKs
    except OSError as e:
        raise MirrorError(f"cannot open bundle {bundle}: {e.strerror or e}") from None
    with f:
        stop = threading.Event()
        raw = _RawReader(f, stop, archive_digest)
        try:
            stream = _Inflater(raw, stop, progress)
            try:
                reader = BundleReader(bundle, raw, stream)
                try:
                    yield reader
                finally:
                    reader.close()
            finally:
                stream.close()  # before the file closes: its thread reads the file
        finally:
            raw.close()


def read_index(bundle: Path) -> BundleIndex:
    """The bundle's validated index; reads only the first member."""
    with open_bundle(bundle) as reader:
        return reader.index


def verify_bundle(bundle: Path, progress: Progress | None = None) -> BundleIndex:
    """Stream the whole bundle and check every member against the index; IntegrityError on the first fault."""
    with open_bundle(bundle, progress) as reader:
        for file in reader.files():
            file.read()
        return reader.index


__all__ = [
    "INDEX_NAME",
    "IN_TARGET",
    "PACKED_HERE",
    "SUMS_NAME",
    "BundleFile",
    "BundleIndex",
    "BundleMember",
    "BundleReader",
    "BundleSummary",
    "Chunk",
    "IndexedCommit",
    "IndexedRepo",
    "ModelSpecLike",
    "Placement",
    "RepoSelection",
    "VolumeSet",
    "build_index",
    "check_side_file",
    "chunk_name",
    "chunk_offset",
    "describe_index",
    "iter_members",
    "member_name",
    "open_bundle",
    "read_index",
    "select_all",
    "select_specs",
    "sums_text",
    "verify_bundle",
    "write_archive",
    "write_bundle",
]
