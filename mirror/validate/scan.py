"""The scan of one revision: every check that applies to each of its files, its remote code and its licence,
gathered into what `Policy.verdict` rules on (`RevisionScan`). One engine for a store, a bundle and an
imported tree alike (`mirror.scanning` gives it their files).

`checks_for(path)` is the one table of which content checks read which file: the header check its suffix
names (`headers.header_check`) and the pickle check (`pickles.is_pickle_based`). A file is read through
its `ScanFile.open`, a fresh stream per check, closed after. The pickle check seeks (a zip's directory is
at its end): a stream that cannot seek (an object in a bucket, a member of a bundle) is first spooled to
a temporary file, at most the file's size, in the caller's `temp_dir` (else the system's), removed after.
Memory stays flat: the checks read headers and pickles as consumed, small config files and the README
within their bounds only.
"""

from __future__ import annotations

import io
import posixpath
import queue
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

from mirror.bounded import CARD, MODEL_CONFIG
from mirror.hashing import CHUNK
from mirror.repo import RepoKey
from mirror.snapshot import FileRecord
from mirror.validate.findings import Finding
from mirror.validate.headers import Check, header_check
from mirror.validate.pickles import check_pickled, is_pickle_based
from mirror.validate.policy import Policy, Verdict, revision_licenses
from mirror.validate.remote_code import CONFIG_FILES, check_remote_code

README = "README.md"  # the model card: its front matter's `license:` is the revision's licence
SEEKS: frozenset[Check] = frozenset({check_pickled})  # the checks that need a seekable stream

Opener = Callable[[], BinaryIO]  # a fresh stream at the file's first byte; the caller of it closes it
Read = Callable[[str], "bytes | None"]


@dataclass(frozen=True)
class ScanFile:
    """A file of a revision: its path in the repo, its size, and how to open a stream of its bytes."""

    path: str
    size: int
    open: Opener


def checks_for(path: str) -> tuple[Check, ...]:
    """The content checks that read the repo file `path` (none for most files: they are not read)."""
    header = header_check(path)
    return (*((header,) if header else ()), *((check_pickled,) if is_pickle_based(path) else ()))


def is_small_read(path: str) -> bool:
    """Whether the revision scan reads the file whole (within its bound): a config file whose auto_map
    remote code reads, or the README whose licence the policy reads."""
    return posixpath.basename(path) in CONFIG_FILES or path == README


def read_bound(path: str) -> int:
    """How many bytes of a small file (`is_small_read`) are read at most."""
    return CARD.size if path == README else MODEL_CONFIG.size


def scan_file(file: ScanFile, temp_dir: Path | None = None) -> list[Finding]:
    """The findings of every content check that applies to `file` ([] when none applies)."""
    found: list[Finding] = []
    for check in checks_for(file.path):
        with closing(file.open()) as stream:
            if check in SEEKS and not stream.seekable():
                with spooled(stream, file.size, temp_dir) as local:
                    found += check(file.path, local, file.size)
            else:
                found += check(file.path, stream, file.size)
    return found


def spooled(stream: BinaryIO, size: int, temp_dir: Path | None = None) -> BinaryIO:
    """A seekable copy of `stream` (at most `size` bytes) in a temporary file, removed when closed."""
    local = tempfile.TemporaryFile(dir=temp_dir)  # noqa: SIM115 - the caller closes it
    try:
        copy_bounded(stream, local, size)
        local.seek(0)
    except BaseException:
        local.close()
        raise
    return local


def copy_bounded(source: BinaryIO, sink: Any, size: int) -> None:
    """Copy at most `size` bytes of `source` to `sink`, in chunks."""
    remaining = size
    while remaining > 0 and (chunk := source.read(min(CHUNK, remaining))):
        sink.write(chunk)
        remaining -= len(chunk)


def read_small(file: ScanFile) -> bytes:
    """A small file's bytes, one more than its bound at most (so that an overlong one shows)."""
    with closing(file.open()) as stream:
        return stream.read(read_bound(file.path) + 1)


class MemberPipe(io.RawIOBase):
    """A forward-only stream of bytes pushed by another thread (`feed`, then `end`): a bundle member read
    by a check while the bundle reader verifies it. At most a few blocks wait in it. Closing it early (the
    check read its header) makes `feed` discard the rest, so the pusher never blocks on a reader gone."""

    def __init__(self, depth: int = 4) -> None:
        super().__init__()
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._gone = threading.Event()
        self._block = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def feed(self, block: memoryview | bytes) -> None:
        """Give the reader a copy of `block` (waiting while the pipe is full); nothing once it is closed."""
        if not self._gone.is_set():
            self._queue.put(bytes(block))

    def end(self) -> None:
        """No more bytes: the reader gets end of file."""
        if not self._gone.is_set():
            self._queue.put(None)

    def readinto(self, buffer: Any) -> int:
        while not self._block:
            if self._ended:
                return 0
            item = self._queue.get()
            if item is None:
                self._ended = True
                return 0
            self._block = memoryview(item)
        n = min(len(buffer), len(self._block))
        buffer[:n] = self._block[:n]
        self._block = self._block[n:]
        return n

    def close(self) -> None:
        """Stop reading: what is queued is dropped, which frees a `feed` waiting for room (it then puts
        its one block in the emptied queue and returns), and later feeds drop theirs."""
        self._gone.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        super().close()


@dataclass(frozen=True)
class RevisionScan:
    """What the scan of a revision found: the findings (sorted), the other repos whose code its auto_map
    names, the licences its README names and its total size: everything `Policy.verdict` rules on."""

    findings: tuple[Finding, ...]
    repos: tuple[str, ...]
    licenses: tuple[str, ...]
    size: int

    def verdict(self, policy: Policy) -> Verdict:
        return policy.verdict(self.findings, license=self.licenses, size=self.size)

    def with_findings(self, extra: Iterable[Finding]) -> RevisionScan:
        """This scan with `extra` findings beside its own (the hub's scan; what a bundle carries), each once."""
        return replace(self, findings=tuple(sorted({*self.findings, *extra})))

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [f.to_json() for f in self.findings],
            "repos": list(self.repos),
            "licenses": list(self.licenses),
            "size": self.size,
        }

    @classmethod
    def from_json(cls, data: Any) -> RevisionScan:
        """From its JSON form (`to_json`); ValueError saying what is wrong (a record may be damaged)."""
        if not isinstance(data, dict):
            raise ValueError("a revision scan is not an object")
        findings, repos, licenses, size = (data.get(k) for k in ("findings", "repos", "licenses", "size"))
        if not isinstance(findings, list) or not isinstance(size, int) or isinstance(size, bool):
            raise ValueError("a revision scan needs a list of findings and a size")
        if not _strings(repos) or not _strings(licenses):
            raise ValueError("a revision scan's repos and licenses must be lists of strings")
        return cls(tuple(Finding.from_json(f) for f in findings), tuple(repos), tuple(licenses), size)


# The store's record of a commit's scan (`Store.write_scan`): the files it covers (path -> sha256), the
# scan, and notes on it (the hub's own scan). A commit's files never change, so the record is used again
# while it covers exactly the same files (a sync's no-op re-sync, an export).
def scan_record(files: Sequence[FileRecord], scan: RevisionScan, notes: Sequence[str]) -> dict[str, Any]:
    """The record of a commit's scan of `files`, as the store keeps it."""
    return {"files": {f.path: f.sha256 for f in files}, "scan": scan.to_json(), "notes": list(notes)}


def recorded_scan(record: Any, files: Sequence[FileRecord]) -> tuple[RevisionScan, tuple[str, ...]] | None:
    """The recorded scan and its notes when `record` (`Store.read_scan`) covers exactly `files`; None
    otherwise (no record, a record of other files, or one that cannot be read: the files are scanned again)."""
    if not isinstance(record, dict) or record.get("files") != {f.path: f.sha256 for f in files}:
        return None
    notes = record.get("notes")
    try:
        scan = RevisionScan.from_json(record.get("scan"))
    except ValueError:
        return None
    return scan, tuple(n for n in notes if isinstance(n, str)) if isinstance(notes, list) else ()


def _strings(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def revision_scan(sizes: Mapping[str, int], content: Sequence[Finding], read: Read) -> RevisionScan:
    """A revision's scan from its files (path -> size), the findings of their content checks, and
    `read(path)`: the bytes of a small file (`is_small_read`, within `read_bound`), None if unreadable."""
    remote = check_remote_code(sizes, read)
    readme = read(README) if README in sizes and sizes[README] <= CARD.size else None
    return RevisionScan(
        findings=tuple(sorted({*content, *remote.findings})),
        repos=remote.repos,
        licenses=revision_licenses(readme),
        size=sum(sizes.values()),
    )


def scan_revision(files: Sequence[ScanFile], temp_dir: Path | None = None) -> RevisionScan:
    """Scan a revision whose files can each be opened (a store's blobs, an imported tree's files)."""
    by_path = {f.path: f for f in files}
    content = [finding for f in files for finding in scan_file(f, temp_dir)]

    def read(path: str) -> bytes | None:
        file = by_path.get(path)
        if file is None or not is_small_read(path):
            return None
        try:
            return read_small(file)
        except OSError:
            return None

    return revision_scan({f.path: f.size for f in files}, content, read)


def scan_blobs(
    open_blob: Callable[[str], BinaryIO], files: Sequence[FileRecord], temp_dir: Path | None = None
) -> RevisionScan:
    """Scan a revision of a store from its file records: `open_blob(sha256)` streams a blob (`Store.open_blob`)."""
    return scan_revision([ScanFile(f.path, f.size, partial(open_blob, f.sha256)) for f in files], temp_dir)


@dataclass(frozen=True)
class ScannedRevision:
    """One repo revision scanned, and the policy's verdict on it (`mirror scan`, `mirror inspect`)."""

    repo: RepoKey
    commit: str
    scan: RevisionScan
    verdict: Verdict
    missing_repos: tuple[str, ...] = ()  # repos its auto_map refers to that the scanned set does not hold
    unscanned: tuple[str, ...] = ()  # "path: why" for each file that could not be read

    @classmethod
    def judge(
        cls,
        repo: RepoKey,
        commit: str,
        scan: RevisionScan,
        policy: Policy,
        held: Collection[str],
        unscanned: tuple[str, ...] = (),
    ) -> ScannedRevision:
        """The verdict of `policy` on `scan`; `held` are the repo ids beside it (the others its auto_map
        refers to are missing)."""
        missing = tuple(r for r in scan.repos if r not in held)
        return cls(repo, commit, scan, scan.verdict(policy), missing, unscanned)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.repo.to_json(),
            "commit": self.commit,
            **self.scan.to_json(),
            "verdict": self.verdict.to_json(),
            "missing_repos": list(self.missing_repos),
            "unscanned": list(self.unscanned),
        }
