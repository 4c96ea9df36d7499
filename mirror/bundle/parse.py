"""Parsing `MIRROR-BUNDLE.json`: the one validation of a bundle index (`BundleIndex.from_json` calls it).

A parsed index is valid by construction: safe names, well-formed hashes and commits, revisions that name
the commits the bundle holds, names every layout can publish, placements that agree, and file members
with distinct names. Nothing downstream checks an index's fields again.
"""

from __future__ import annotations

import re
from typing import Any, cast

from mirror.bundle import bytegroup
from mirror.bundle.bytegroup import Codec
from mirror.bundle.index import (
    CODECS_SINCE,
    FORMAT,
    FORMAT_VERSIONS,
    IN_TARGET,
    PACKED_HERE,
    SCANNED_SINCE,
    BundleIndex,
    Chunk,
    IndexedCommit,
    IndexedRepo,
    Placement,
    VolumeSet,
)
from mirror.bundle.members import iter_members
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
from mirror.repo import REPO_TYPES, check_repo_id
from mirror.snapshot import FileRecord, check_listing, listing_from_json
from mirror.validate.scan import RevisionScan

# Of PATH_MAX, what a name in a bundle leaves for the target's own path and the folders a layout puts
# around it (the longest: the hf layout's `models--<org>--<name>/.mirror/tmp/<id>/snapshot-<commit>/`).
PATH_ROOM = 512

_SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

# What the files parsed so far say of each content's placement and codec (sha256 -> placement, codec).
_Placements = dict[str, Placement]
_Codecs = dict[str, Codec | None]


def _bad(what: str) -> IntegrityError:
    return IntegrityError(f"invalid bundle index: {what}; the bundle is corrupt or was not written by mirror")


def _field(data: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(data, dict):
        raise _bad(f"{what} is not an object")
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"{what}: {key!r} is missing or has the wrong type")
    return value


def _check_publishable(name: str, what: str) -> None:
    """A name every layout can write below a target: each part within NAME_MAX bytes, and the whole
    leaving PATH_ROOM bytes of PATH_MAX for the target and the layout's own folders around it."""
    problem = name_problem(name, PATH_ROOM)
    if problem is not None:
        raise IntegrityError(
            f"the bundle cannot be imported: {what} cannot be a file name ({problem}, with {PATH_ROOM} "
            "bytes kept for the target and the layout's folders)"
        )


def _placement(data: dict[str, Any], record: FileRecord, volumes: VolumeSet | None) -> Placement:
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


def _codec(data: Any, record: FileRecord, volumes: VolumeSet | None, version: int | str) -> Codec:
    """A file's `codec` (format 1.3): one this mirror restores, with ranges it can restore by."""
    what = f"file {record.path!r}"
    if FORMAT_VERSIONS.index(version) < FORMAT_VERSIONS.index(CODECS_SINCE):
        raise _bad(f"{what} names a codec, which a bundle of format {version} cannot")
    name = _field(data, "name", str, f"{what} codec")
    if name not in bytegroup.CODECS:
        raise _bad(f"{what} is packed with the codec {name!r}, which this mirror does not know")
    if volumes is not None:
        raise _bad(f"{what} names a codec, which a volume of a set cannot")
    spans = _field(data, "ranges", list, f"{what} codec")
    if len(spans) > bytegroup.MAX_RANGES:
        raise _bad(f"{what}: its codec has {len(spans)} ranges, over the limit of {bytegroup.MAX_RANGES}")
    ranges = []
    for span in spans:
        if not (isinstance(span, list) and len(span) == 2 and all(type(n) is int for n in span)):
            raise _bad(f"{what}: its codec has a range that is not two integers: {span!r}")
        ranges.append((span[0], span[1]))
    problem = bytegroup.ranges_problem(tuple(ranges), record.size)
    if problem is not None:
        raise _bad(f"{what}: its codec's ranges do not fit it ({problem})")
    return Codec(name, tuple(ranges))


def _file(
    data: Any, volumes: VolumeSet | None, placements: _Placements, codecs: _Codecs, version: int | str
) -> FileRecord:
    """A file record, its placement recorded in `placements` and its codec in `codecs` (files with one
    content are placed and packed alike)."""
    path = _field(data, "path", str, "file record")
    _field(data, "size", int, f"file {path!r}")
    _field(data, "sha256", str, f"file {path!r}")
    oid = _field(data, "oid", str, f"file {path!r}")
    _field(data, "lfs", bool, f"file {path!r}")
    record = FileRecord.from_json(data)  # a safe path, a size, a sha256
    if not (is_commit(oid) or is_sha256(oid)):  # git's sha1 ids, or its sha256 ones
        raise _bad(f"file {path!r} has an invalid oid {oid!r}")
    placement = _placement(data, record, volumes)
    if placements.setdefault(record.sha256, placement) != placement:
        raise _bad(f"files with the content {record.sha256} are placed differently")
    codec = _codec(data["codec"], record, volumes, version) if "codec" in data else None
    if codec is not None and placement != PACKED_HERE:
        raise _bad(f"file {path!r} names a codec, but the bundle does not pack it")
    if codecs.setdefault(record.sha256, codec) != codec:
        raise _bad(f"files with the content {record.sha256} are packed differently")
    return record


def _scan(data: Any, what: str, files: tuple[FileRecord, ...]) -> tuple[RevisionScan, tuple[str, ...]]:
    """A commit's scan (format 1.2): a `RevisionScan` of exactly its files, and notes (strings)."""
    try:
        scan = RevisionScan.from_json(data)
    except ValueError as e:
        raise _bad(f"{what}: its scan is invalid ({e})") from None
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise _bad(f"{what}: its scan's notes must be a list of strings")
    size = sum(f.size for f in files)
    if scan.size != size:
        raise _bad(f"{what}: its scan covers {scan.size} bytes, its files hold {size}")
    paths = {f.path for f in files}
    for finding in scan.findings:
        if finding.path and finding.path not in paths:
            raise _bad(f"{what}: its scan has a finding on {finding.path!r}, which is not one of its files")
    return scan, tuple(notes)


def _commit(
    data: Any, volumes: VolumeSet | None, placements: _Placements, codecs: _Codecs, version: int | str
) -> IndexedCommit:
    commit = check_commit(_field(data, "commit", str, "commit entry"))
    complete = _field(data, "complete", bool, f"commit {commit}")
    files = tuple(
        _file(f, volumes, placements, codecs, version)
        for f in _field(data, "files", list, f"commit {commit}")
    )
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
    scan: RevisionScan | None = None
    notes: tuple[str, ...] = ()
    if "scan" in data:
        if FORMAT_VERSIONS.index(version) < FORMAT_VERSIONS.index(SCANNED_SINCE):
            raise _bad(f"commit {commit} carries a scan, which a bundle of format {version} cannot")
        scan, notes = _scan(data["scan"], f"commit {commit}", files)
    return IndexedCommit(
        commit=commit,
        complete=complete,
        files=tuple(sorted(files, key=lambda f: f.path)),
        listing=listing,
        scan=scan,
        scan_notes=notes,
    )


def _repo(
    data: Any, volumes: VolumeSet | None, placements: _Placements, codecs: _Codecs, version: int | str
) -> IndexedRepo:
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
    commits = tuple(
        _commit(c, volumes, placements, codecs, version) for c in _field(data, "commits", list, repo_id)
    )
    known = {c.commit for c in commits}
    if len(known) != len(commits):
        raise _bad(f"{repo_id} lists a commit twice")
    revisions: list[tuple[str, str]] = []
    for rev in _field(data, "revisions", list, repo_id):
        name = check_relpath(_field(rev, "name", str, f"{repo_id} revision"), "revision name")
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
    return IndexedRepo(
        source=source,
        repo_type=repo_type,
        repo_id=repo_id,
        revisions=tuple(revisions),
        commits=tuple(sorted(commits, key=lambda c: c.commit)),
        hf_id=hf_id,
    )


def _volume_set(data: Any) -> VolumeSet:
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
    return VolumeSet(set_id, volume, tuple(names))


def _format_version(value: Any) -> int | str:
    """The index's `format_version`, one this mirror reads: exactly as some mirror wrote it."""
    if type(value) in (int, str) and value in FORMAT_VERSIONS:
        return cast(int | str, value)
    number = re.fullmatch(r"([0-9]+)(?:\.([0-9]+))?", str(value)) if type(value) in (int, str) else None
    newest = tuple(int(n) for n in str(FORMAT_VERSIONS[-1]).split("."))
    if number is not None and (int(number[1]), int(number[2] or 0)) > newest:
        *older, last = map(str, FORMAT_VERSIONS)
        raise IntegrityError(
            f"bundle format version {value!r} is not supported (this mirror reads "
            f"{', '.join(older)} and {last}); upgrade mirror on this machine"
        )
    raise _bad(f"invalid format_version {value!r}")


def parse_index(data: Any) -> BundleIndex:
    """The index `data` (parsed JSON) describes, validated whole; IntegrityError naming what is wrong."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IntegrityError(f"not a mirror bundle: the first member is not a {FORMAT} index")
    version = _format_version(data.get("format_version"))
    created = _field(data, "created", str, "index")
    if parse_iso(created) is None:
        raise _bad(f"invalid creation time {created!r}")
    volume_set = _volume_set(data["volume_set"]) if "volume_set" in data else None
    placements: _Placements = {}
    codecs: _Codecs = {}
    repos = tuple(
        _repo(r, volume_set, placements, codecs, version) for r in _field(data, "repos", list, "index")
    )
    if len({r.key for r in repos}) != len(repos):
        raise _bad("a repo is listed twice")
    index = BundleIndex(
        created=created,
        repos=tuple(sorted(repos, key=lambda r: r.key)),
        tool_version=_field(data, "tool_version", str, "index"),
        tool=_field(data, "tool", str, "index"),
        placements={sha: p for sha, p in sorted(placements.items()) if p != PACKED_HERE},
        volume_set=volume_set,
        format_version=version,
        codecs={sha: c for sha, c in sorted(codecs.items()) if c is not None},
    )
    if volume_set is not None and index.set_id() != volume_set.id:
        raise _bad("the volume set id does not match the index (a damaged or altered volume)")
    names = [m.name for m in iter_members(index)]
    if len(set(names)) != len(names):
        why = " (a model and a dataset with the same id and commit, which format 1 names alike?)"
        raise _bad("two files share a member name" + (why if version == 1 else ""))
    return index
