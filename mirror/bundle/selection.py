"""Selection: what of the store goes into a bundle (every repo, or the revisions and files requests name),
and `build_index`, which turns a selection into the validated index a bundle is written from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import BinaryIO, TypedDict

from mirror.bundle import bytegroup
from mirror.bundle.bytegroup import Codec
from mirror.bundle.index import (
    CODECS_SINCE,
    DEFAULT_BRANCHES,
    IN_TARGET,
    BundleIndex,
    IndexedCommit,
    IndexedRepo,
)
from mirror.bundle.members import iter_members
from mirror.clock import iso, parse_iso
from mirror.errors import MirrorError
from mirror.paths import is_commit
from mirror.repo import RepoKey, RevisionRequest
from mirror.snapshot import Snapshot
from mirror.store import Store
from mirror.validate import safetensors
from mirror.validate.scan import RevisionScan, recorded_scan, scan_blobs


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


def select_requests(store: Store, requests: Iterable[RevisionRequest]) -> list[RepoSelection]:
    """The revisions requested, as the store resolved them, with each request's file filter applied.

    Several requests for one repo are merged: their revisions in order of first mention, and a commit keeps
    every file that any request naming it wants.
    """
    revisions: dict[RepoKey, dict[str, str]] = {}
    wanted: dict[RepoKey, dict[str, set[str]]] = {}
    snaps: dict[RepoKey, dict[str, Snapshot]] = {}
    hf_ids: dict[RepoKey, str] = {}
    for request in requests:
        key, name, hf_id = request.key, request.revision, request.hf_id
        if hf_id is not None and hf_ids.setdefault(key, hf_id) != hf_id:
            raise MirrorError(
                f"{key}: the manifests give it two hf_id values ({hf_ids[key]} and {hf_id}); keep one"
            )
        refs = store.read_refs(key)
        if name in refs:
            commit = refs[name].commit
        elif is_commit(name) and store.read_snapshot(key, name) is not None:
            commit = name
        else:
            raise MirrorError(
                f"{key}: revision {name} was never synced into the store {store}; "
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
        paths.update(f.path for f in repo_snaps[commit].files if request.wants(f.path))
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
                    listing=snap.full_listing(),
                )
            )
        selection.append(
            RepoSelection(key, tuple(revisions[key].items()), tuple(snapshots), hf_id=hf_ids.get(key))
        )
    return selection


EXPORT_SCANNED = (
    "scanned at export: the store holds no scan of these files (synced before mirror scanned, or a subset "
    "of them exported); the hub's own scan was not asked"
)


class _Scanned(TypedDict):
    scan: RevisionScan
    scan_notes: tuple[str, ...]


def _scan_of(store: Store, key: RepoKey, snapshot: Snapshot) -> _Scanned:
    """The scan of the snapshot's files a bundle carries: the one the store recorded at sync when it covers
    exactly them (`recorded_scan`), else one made now from the blobs (not recorded, nor spooled in the store:
    an export only reads it), with a note saying so."""
    recorded = recorded_scan(store.read_scan(key, snapshot.commit), snapshot.files)
    if recorded is not None:
        return {"scan": recorded[0], "scan_notes": recorded[1]}
    paths = {f.sha256: f.path for f in snapshot.files}

    def open_blob(sha256: str) -> BinaryIO:
        try:
            return store.open_blob(sha256)
        except FileNotFoundError:
            raise MirrorError(
                f"{key}@{snapshot.commit}: the store lacks {paths[sha256]} ({sha256}); "
                "run `mirror sync` again or `mirror verify` to check the store"
            ) from None

    scan = scan_blobs(open_blob, snapshot.files)  # a pickle from a bucket spools to the system's temp
    return {"scan": scan, "scan_notes": (EXPORT_SCANNED,)}


def _codecs(store: Store, index: BundleIndex) -> dict[str, Codec]:
    """The bytegroup codec of each packed safetensors content whose header names 16-bit tensors (the
    ranges it gives, made usable: see `bytegroup.merged`); only the header is read."""
    codecs: dict[str, Codec] = {}
    for m in iter_members(index):
        if m.link_to is not None or not m.file.path.lower().endswith(bytegroup.SUFFIX):
            continue
        try:
            with store.open_blob(m.sha256) as blob:
                spans = safetensors.spans_of(blob, m.size, bytegroup.SIXTEEN_BIT)
        except FileNotFoundError:
            continue  # the export names what the store lacks

        ranges = bytegroup.merged(spans, m.size)
        if ranges:
            codecs[m.sha256] = Codec(bytegroup.NAME, ranges)
    return codecs


def build_index(
    store: Store,
    selection: Iterable[RepoSelection],
    *,
    created: int | None = None,
    have: Mapping[str, int] | None = None,
    codec: str | None = None,
) -> BundleIndex:
    """The index of a bundle holding `selection`, validated as a reader would, each commit with its scan
    (`_scan_of`); with `codec` (bytegroup), the files it packs say so (`_codecs`).

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
                    IndexedCommit(
                        s.commit,
                        s.complete,
                        tuple(sorted(s.files, key=lambda f: f.path)),
                        listing=None if s.complete else s.listing,
                        **_scan_of(store, sel.key, s),
                    )
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
        created = max((t for t in map(parse_iso, stamps) if t is not None), default=0)
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
        created=iso(created), repos=tuple(sorted(repos, key=lambda r: r.key)), placements=placements
    )
    if codec is not None and (codecs := _codecs(store, index)):
        index = replace(index, codecs=codecs, format_version=CODECS_SINCE)
    # Never write what a reader would refuse.
    return BundleIndex.from_json(index.to_json())
