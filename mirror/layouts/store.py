"""The `store` layout: an import into a mirror store, the format `mirror sync` writes (`mirror.store`), so
the far side holds complete commit records and refs exactly as the connected side does (and can serve them
with `mirror serve`, or export them again). The target is a store's folder or its s3:// URL: into a bucket,
the same writes go through the storage, and what the import does locally (staging, kept volumes) is in a
folder beside the storage's staging (`bucket_work_folder`); a bucket's blobs are never
content to stage from (`candidates`, `content_files`: none), but a blob the bucket holds is `in_place`:
content a delta leaves to the target needs no staging there; `expected_files` lists none (no file to hash
in place).

Every write goes through `Store` (`add_blob`, `write_snapshot`, `write_scan`, `set_refs`), which owns the
format. Per repo, in this order, each write atomic: the blobs its commits use, then its commit records,
then the import's scan of each commit (`mirror.importing.judge`; the record a sync writes, so `mirror serve`
finds it; a sync's record of the same files and findings is kept), then its refs.json (all its revision
names in one write). A reader (a server, a sync) thus never sees a record
naming a missing blob, nor a ref naming a missing record; a kill leaves at most blobs no record uses yet
(`mirror gc` removes them; the rerun uses them). The import holds the store's writer lock throughout
(`writing`), as `mirror sync` and `mirror gc` do: another holder makes it exit 75, or wait `--wait`.

What the store keeps of an import, and where:
- scans: the import's own scan of each commit (`mirror.importing.judge`: with the hub's findings the bundle
  carries, and its notes on them), recorded as a sync records it (`Store.write_scan`) unless a record of
  the same files holds the same scan; an export from this store carries it.
- commit records: the bundle's files (sha256, git oid, LFS flag, size) and, for a partial commit, its
  complete listing; merged with a record the store already has (`Store.write_snapshot`). Their
  `synced_at`, and that of every ref the import sets, is the bundle's creation time (a bundle carries no
  other time: `mirror export` makes it the newest sync of what it packs), never the import's, so
  importing a bundle again, or the same bundle into another store, writes the same bytes.
- refs: a name already at the bundle's commit is left as it is (with its time); a name whose `synced_at`
  is newer than the bundle's creation (a newer bundle or sync moved it) is kept and reported; any other
  is moved. Bundles thus give the same refs and records in any order (their times are those of the
  bundles that brought them).
- receipts: none. The commit records are the store's receipts: `expected_files` (`mirror verify --target
  DIR --layout store`) is every file a record lists, at its blob; `content_files` (`mirror inventory
  --layout store`) is every blob, its sha256 read from its name (no hashing), so `export --have` against a
  store costs one directory walk.
- staging: `tmp/import/<id>/` (a volume set's kept content: `tmp/kept/<set id>/`), on the store's file
  system (for a bucket, in `bucket_work_folder`).
- signature sequences accepted (`sequences`): in the store itself, `trust/<key id>.json` (a file of the
  folder, an object of the bucket), so every host importing into one bucket refuses a bundle older than
  one any of them accepted; raised with conditional writes, never lowered (`Store.update_trust`).
- sharing: a store holds each content once whatever repos use it, so `--link-shared` is always in effect
  and `--no-symlinks` means nothing here; `copies` is one per content.
- `candidates`: the blob each file of the repo would have; a blob with the right size is hashed before it
  is used, and one that turns out damaged (or is a link) is replaced by the bundle's verified copy.
- `held_repos`: every repo the store has records of, its refs and the commits recorded;
  `removed_revisions`: none (`mirror gc` drops a revision's records with it: nothing is left to check).
- `uses`: the store's own folders, each blob (a link there is replaced, never followed), the repo's
  folder of records; a refused import leaves the store as it was, but for the lock file (a store that did
  not exist is left as a folder holding only that file).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from mirror.bundle import IndexedCommit, IndexedRepo
from mirror.clock import Clock
from mirror.errors import MirrorError
from mirror.fsutil import link_or_copy
from mirror.hashing import HashCache
from mirror.layouts.layout import ExpectedFile, Layout, Publication, Use
from mirror.paths import is_sha256
from mirror.repo import RepoKey
from mirror.report import HeldRepo, RepoReport
from mirror.snapshot import FileRecord, Snapshot
from mirror.storage import open_storage
from mirror.storage.base import Storage
from mirror.store import Store
from mirror.validate.scan import RevisionScan, recorded_scan, scan_record


class StoreLayout(Layout):
    name = "store"

    def __init__(self, target: Path | str, **options: Any) -> None:
        self.named = target  # a folder, or an s3:// URL
        storage = open_storage(target, clock=_READING)
        root = storage.local_root
        super().__init__(root if root is not None else bucket_work_folder(storage), **options)
        self.link_shared = True  # a store shares every content across repos by design (--link-shared)
        self.store = Store(storage, clock=_READING)
        self.local = root is not None

    @property
    def where(self) -> Path | str:
        return self.target if self.local else self.named

    @property
    def sequences(self) -> StoreSequences:
        return StoreSequences(self.store)

    @contextmanager
    def writing(self, wait: float, clock: Clock | None) -> Iterator[None]:
        if clock is None:
            raise ValueError("an import into a store needs a clock: it stamps the store's writer lock")
        self.store = Store(open_storage(self.named, clock=clock), clock=clock)
        with self.store.lock(wait):
            yield

    def _blob(self, sha256: str) -> Path:
        return self.target / Store.blob_key(sha256)

    def staging_root(self, repo: IndexedRepo) -> Path:
        return self.target / "tmp" / "import"

    def uses(self, repo: IndexedRepo) -> Iterator[Use]:
        root, store = self.target, self.store
        for folder in ("tmp", "tmp/import"):
            yield Use(root / folder, "dir")
        if not self.local:
            return  # the rest is in the bucket: keys, no path to check
        for folder in ("blobs", "blobs/sha256", "doubt", "repos"):
            yield Use(root / folder, "dir")
        for sha in sorted({f.sha256 for f in repo.files()}):
            blob = self._blob(sha)
            yield Use(blob.parent, "dir")
            yield Use(blob, "entry")  # a link or a damaged file there is replaced, never followed
        named = root / "repos"
        refs = root / store.refs_key(repo.key)
        yield Use(refs.parent, "dir", named=named)
        yield Use(refs, "file", named=named)
        for commit in repo.commits:
            record = root / store.snapshot_key(repo.key, commit.commit)
            yield Use(record.parent, "dir", named=named)
            yield Use(record, "file", named=named)

    def candidates(self, repo: IndexedRepo) -> Iterator[tuple[str, int, Path]]:
        if not self.local:
            return  # a bucket's blobs are not files to stage from: the bundle brings what a repo needs
        # Never a link: the store takes one for damage (`Store.blob_problem`), and the import replaces it.
        yield from ((sha, size, path) for sha, size, path in self.copies(repo) if not path.is_symlink())

    def copies(self, repo: IndexedRepo) -> Iterator[tuple[str, int, Path]]:
        seen: set[str] = set()
        for f in repo.files():
            if f.sha256 not in seen:
                seen.add(f.sha256)
                yield f.sha256, f.size, self._blob(f.sha256)

    def publish(self, pub: Publication) -> RepoReport:
        repo, store = pub.repo, self.store
        files_written = bytes_written = 0
        changed = False
        placed: set[str] = set()
        for f in repo.files():  # the blobs first
            if f.sha256 in placed:
                continue
            placed.add(f.sha256)
            if f.sha256 not in pub.content:  # kept in place (`in_place`), judged under this same lock
                continue
            if self._holds(f, pub.hashes):
                continue
            if store.blob_problem(f.sha256) is None:
                store.doubt_blob(f.sha256)  # a damaged blob of the right size, until put_blob replaces it
            temp = pub.scratch / uuid.uuid4().hex
            link_or_copy(pub.content[f.sha256], temp)  # the staged file may serve other repos too
            store.put_blob(temp, f.sha256)  # `_holds` judged what is there: nothing to look at again
            self.checkpoint()
            files_written += 1
            bytes_written += f.size
            changed = True
        for commit in repo.commits:  # then the commit records
            before = store.read_snapshot(repo.key, commit.commit)
            after = store.write_snapshot(
                Snapshot(
                    source=repo.source,
                    repo_type=repo.repo_type,
                    repo_id=repo.repo_id,
                    commit=commit.commit,
                    files=commit.files,
                    complete=commit.complete,
                    synced_at=pub.stamp.created,
                    listing=None if commit.complete else commit.listing,
                )
            )
            if after != before:
                self.checkpoint()
                changed = True
        for commit in repo.commits:  # their scans, for `mirror serve` and the next sync (before the refs)
            if self._record_scan(repo.key, commit, pub.scans.get(commit.commit)):
                self.checkpoint()
                changed = True
        # The refs last, in one write: a revision name resolves only once everything it names is in place.
        current = store.read_refs(repo.key)
        moves: dict[str, str] = {}
        kept: list[str] = []
        for name, at in repo.revisions:
            ref = current.get(name)
            if ref is not None and ref.commit == at:
                continue
            if ref is not None and ref.synced_at > pub.stamp.created:  # one ISO form: compared as text
                kept.append(name)  # a newer bundle or sync moved it elsewhere
                continue
            moves[name] = at
        if moves:
            store.set_refs(repo.key, moves, pub.stamp.created)
            self.checkpoint()
            changed = True
        records = store.repo_key(repo.key)
        return RepoReport(
            repo=repo.key,
            path=self.target / records if self.local else store.where(records),
            revisions=repo.revisions,
            files_written=files_written,
            bytes_written=bytes_written,
            already_present=not changed,
            kept=tuple(kept),
        )

    def _record_scan(self, key: RepoKey, commit: IndexedCommit, scan: RevisionScan | None) -> bool:
        """Record the import's own scan of a commit (`mirror.importing.judge`: the far side's, with the hub's
        findings the bundle carries) as a sync does (`scan_record`), with the notes on the hub's scan the
        bundle carries, unless a record of the same files holds the same scan (a sync's is kept). Whether
        it wrote."""
        if scan is None:
            return False
        recorded = recorded_scan(self.store.read_scan(key, commit.commit), commit.files)
        if recorded is not None and recorded[0] == scan:
            return False
        notes = commit.scan_notes  # the near side's notes on the hub's scan (bundle 1.2)
        self.store.write_scan(key, commit.commit, scan_record(commit.files, scan, notes))
        return True

    def open_in_place(self, sha256: str) -> BinaryIO:
        return self.store.open_blob(sha256)

    def in_place(self, sha256: str, size: int) -> bool:
        # A bucket's blob was verified before it got its key; doubted, it is replaced.
        store = self.store
        return not self.local and store.blob_problem(sha256, size) is None and not store.in_doubt(sha256)

    def _holds(self, f: FileRecord, hashes: HashCache) -> bool:
        """Whether the store's blob holds the file's content, hashed (free for a blob the import already
        hashed); a doubt the hash disproves is lifted."""
        store = self.store
        if not self.local:
            return self.in_place(f.sha256, f.size)
        if store.blob_problem(f.sha256, f.size) is not None:
            return False
        if not hashes.holds(self._blob(f.sha256), f.size, f.sha256):
            return False
        if store.in_doubt(f.sha256):
            store.lift_doubt(f.sha256)
        return True

    def expected_files(self) -> tuple[list[ExpectedFile], list[str]]:
        files: list[ExpectedFile] = []
        problems: list[str] = []
        store = self.store
        if not self.local:  # no file to hash in place: `mirror verify --store s3://...` hashes the blobs
            return files, problems
        for key in store.repos():
            try:
                snapshots = store.snapshots(key)
            except MirrorError as e:
                problems.append(f"{key}: unreadable commit record ({e})")
                continue
            for snap in snapshots:
                files += [
                    ExpectedFile(self._blob(f.sha256), f.size, f.sha256, key, snap.commit, f.path)
                    for f in snap.files
                ]
        return files, problems

    def content_files(self) -> Iterator[tuple[Path, str | None]]:
        if not self.local:
            return  # a bucket's blobs are not files a delta's content can be taken from
        for name, key in self.store.iter_blobs():
            path = self.target / key
            if not path.is_symlink() and path.is_file():
                yield path, name if is_sha256(name) else None

    def named_content(self) -> Iterator[tuple[str, int]]:
        if self.local:
            return  # a folder's blobs are `content_files`
        for name, key in self.store.iter_blobs():
            st = self.store.storage.stat(key)
            if is_sha256(name) and st is not None and st.kind == "file":
                yield name, st.size

    def held_repos(self) -> list[HeldRepo]:
        held = []
        store = self.store
        for key in store.repos():
            refs = store.read_refs(key)
            commits = {snap.commit for snap in store.snapshots(key)}
            held.append(
                HeldRepo(
                    key.repo_type,
                    key.repo_id,
                    tuple(sorted((name, ref.commit) for name, ref in refs.items())),
                    tuple(sorted(commits)),
                )
            )
        return held


class StoreSequences:
    """The trust state (mirror.signing's `SequenceState`) kept in the store: `trust/<key id>.json`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def where(self, key_id: str) -> str:
        return self.store.where(Store.trust_key(key_id))

    def read(self, key_id: str) -> Any:
        return self.store.read_trust(key_id)

    def update(self, key_id: str, change: Callable[[Any], Any]) -> None:
        self.store.update_trust(key_id, change)


def bucket_work_folder(storage: Storage) -> Path:
    """The local folder of an import into a store in a bucket (its staging, a volume set's kept content),
    beside the storage's own staging and so out of reach of the cleaning `mirror gc` asks of it: one per
    bucket location on this host."""
    staging = storage.staging()
    return staging.with_name(f"{staging.name}.import")


def _no_time() -> float:
    raise RuntimeError("reading a store needs no time")


# For what reads the store (inventory, verify, the checks before an import): reading never asks the time,
# which only the writer lock needs (`writing` gives the real clock).
_READING = Clock(time=_no_time)
