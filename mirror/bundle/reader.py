"""Reading a bundle: `open_bundle` streams it once (through the inflating stream, `stream`), reading and
validating the index on open, then walks the tar and checks every file member against the index as it
passes (`BundleReader.files`, `BundleFile.read`), refusing a damaged, truncated or hostile archive without
trusting its tar headers; `read_index` and `verify_bundle` are built on it.
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import IO, cast

import zstandard

from mirror.bounded import INDEX, SHA256_LINE, SUMS, parse_json
from mirror.bundle import bytegroup, location
from mirror.bundle.bytegroup import Codec
from mirror.bundle.diagnosis import frame_holds, sums_disagreement
from mirror.bundle.frames import FrameError, workers_for
from mirror.bundle.index import INDEX_NAME, MAX_INDEX_SIZE, README_NAME, SUMS_NAME, BundleIndex, Progress
from mirror.bundle.members import BundleMember, iter_members, readme_text, sums_text
from mirror.bundle.stream import InflatingStream, RawReader, copied
from mirror.bundle.tarheader import REGULAR, GuardedTarInfo, kind
from mirror.errors import IntegrityError
from mirror.hashing import CHUNK, HashLanes
from mirror.paths import is_safe_relpath, is_sha256

# After the tar's end-of-archive blocks only zero padding may follow; a little more than one tar record.
_MAX_TRAILING = 1 << 20


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
        digest = self._reader._copy(self._info, sink, self._reader.index.codec(member.sha256))
        if digest != member.sha256:
            raise IntegrityError(
                f"{self._reader.path}: {name}: sha256 {digest} does not match the index ({member.sha256}); "
                "the bundle was damaged, copy or export it again"
            )
        self.verified = True


class BundleReader:
    """One pass over a bundle: the index on open, then the file members through `files()`."""

    def __init__(
        self, path: location.BundlePath, raw: RawReader, stream: InflatingStream, lanes: HashLanes
    ) -> None:
        self.path = path
        self._raw = raw
        self._stream = stream
        # Each member is hashed on a lane of its own (consecutive members on different threads) while this
        # thread parses the tar stream and the writer's writes: no thread hashes every member.
        self._lanes = lanes
        self._broken: IntegrityError | None = None
        self._started = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="mirror-bundle-write")
        self.sha256: str | None = (
            None  # the archive's own digest (if asked for), once files() has run to its end
        )
        self.transfer_checked = False  # whether a .sha256 beside the bundle confirmed that digest
        with self._archive_errors():
            # tarfile parses the headers (through GuardedTarInfo) from the forward-only stream; the members'
            # data, the bulk of the bytes, is taken from the stream directly (see _take), not through tarfile.
            self._tar = tarfile.open(  # noqa: SIM115 - lives as long as the reader
                fileobj=cast(IO[bytes], stream), mode="r:", tarinfo=GuardedTarInfo
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
        except FrameError as e:
            holds = frame_holds(e, getattr(self, "index_bytes", None), getattr(self, "index", None))
            self._broken = IntegrityError(f"{self.path}: {e}; it holds {holds}; copy or export it again")
            raise self._broken from None
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

    def _copy(
        self, info: tarfile.TarInfo, sink: Callable[[memoryview], object] | None, codec: Codec | None = None
    ) -> str:
        """Pass the current member's bytes to sink in pieces (never more than its size), restored first when
        a codec packed them; the sha256 of what was passed."""
        if codec is not None:
            return self._copy_restored(info, sink, codec)
        digest = self._lanes.stream()
        with self._archive_errors():
            for view in self._take(info):
                # The sink writes on a thread of its own while a lane hashes: both are done with the view
                # before the next is taken (which hands the view's memory back to the decompressor).
                written = self._writer.submit(sink, view) if sink is not None else None
                digest.update(view).result()
                if written is not None:
                    written.result()
        return digest.hexdigest().result()

    def _copy_restored(
        self, info: tarfile.TarInfo, sink: Callable[[memoryview], object] | None, codec: Codec
    ) -> str:
        """`_copy` for a member a codec packed: its bytes restored (on this thread: numpy shuffles outside the
        GIL), then hashed on a lane and passed to sink; a restored block is written (on the writer's thread)
        while the next one is restored."""
        digest = self._lanes.stream()
        written: Future[object] | None = None
        try:
            with self._archive_errors():
                for view, own in bytegroup.restored(self._take(info), codec):
                    # the block before is written first: `restored` may fill its buffer again
                    if written is not None:
                        written.result()
                        written = None
                    if sink is not None:
                        written = self._writer.submit(sink, view)
                    digest.update(view).result()
                    # a view of the stream is used before the stream moves on
                    if not own and written is not None:
                        written.result()
                        written = None
        finally:
            if written is not None:
                written.result()
        return digest.hexdigest().result()

    def _read_small(self, info: tarfile.TarInfo) -> bytes:
        with self._archive_errors():
            return copied(self._take(info))

    def _read_index(self) -> BundleIndex:
        info = self._next()
        if info is None or info.name != INDEX_NAME or info.type not in REGULAR:
            raise IntegrityError(f"{self.path}: not a mirror bundle (its first member is not {INDEX_NAME})")
        if info.size > MAX_INDEX_SIZE:
            raise IntegrityError(f"{self.path}: refusing a {info.size}-byte index (limit {MAX_INDEX_SIZE})")
        self.index_bytes = self._read_small(info)  # exactly what a signature pins
        try:
            data = parse_json(self.index_bytes, INDEX)
        except ValueError as e:
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
        if info is None or info.name != SUMS_NAME or info.type not in REGULAR:
            raise IntegrityError(
                f"{self.path}: the second member must be {SUMS_NAME} listing the index's files"
            )
        if info.size > SUMS.size:
            raise IntegrityError(f"{self.path}: refusing a {info.size}-byte {SUMS_NAME} (limit {SUMS.size})")
        sums = self._read_small(info)
        if sums != expected_sums:
            raise IntegrityError(
                f"{self.path}: {SUMS_NAME} disagrees with the bundle index: "
                f"{sums_disagreement(expected_sums, sums)}; the bundle is corrupt or crafted, copy or export it again"
            )
        self._check_readme()
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

    def _check_readme(self) -> None:
        """A bundle with members packed by a codec has README.txt third, exactly as the index implies it."""
        expected = readme_text(self.index)
        if expected is None:
            return
        info = self._next()
        if info is None or info.name != README_NAME or info.type not in REGULAR or info.size != len(expected):
            raise IntegrityError(
                f"{self.path}: the third member must be {README_NAME} naming the members packed by a codec; "
                "the bundle is corrupt or crafted, copy or export it again"
            )
        if self._read_small(info) != expected:
            raise IntegrityError(
                f"{self.path}: {README_NAME} disagrees with the bundle index; the bundle is corrupt or crafted, "
                "copy or export it again"
            )

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
        elif info.type not in REGULAR:
            raise IntegrityError(f"{where} is {kind(info)} (tar type {info.type!r}), not a file; refusing it")
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
            self.transfer_checked = check_side_file(self.path, self.sha256)


def check_side_file(bundle: location.BundlePath, sha256: str) -> bool:
    """If `BUNDLE.sha256` sits beside the bundle, it must name the bundle's digest; whether one was there."""
    side = bundle.with_name(bundle.name + ".sha256")
    data = location.read_side(side, SHA256_LINE, IntegrityError)
    if data is None:
        return False
    fields = data.decode("utf-8", "replace").split()
    if not fields or not is_sha256(fields[0].lower()):
        raise IntegrityError(f"{side} is not a sha256sum line; remove it or copy it again")
    if fields[0].lower() != sha256:
        raise IntegrityError(
            f"{bundle}: sha256 {sha256} does not match {side.name} ({fields[0]}); "
            "the bundle changed in transfer, copy it again"
        )
    return True


@contextmanager
def open_bundle(
    bundle: location.BundlePath,
    progress: Progress | None = None,
    *,
    archive_digest: bool = True,
    threads: int = -1,
) -> Iterator[BundleReader]:
    """Open a bundle (a file, or an object in a bucket) for one streaming pass; the index is read and
    validated on open.

    `progress` gets the compressed bytes as they are read, so the bundle's size is the total. With
    `archive_digest`, the whole bundle is hashed too: `reader.sha256` once the members are read, checked
    against a `.sha256` beside the bundle. `threads` decompress the frames (-1: one per core).
    """
    bundle = location.bundle_path(bundle)
    with location.reading(bundle) as f:  # read in CHUNKs
        stop = threading.Event()
        raw = RawReader(f, stop, archive_digest)
        try:
            stream = InflatingStream(raw, stop, progress, threads)
            try:
                with HashLanes(workers_for(threads), "mirror-bundle-sha256") as lanes:
                    reader = BundleReader(bundle, raw, stream, lanes)
                    try:
                        yield reader
                    finally:
                        reader.close()
            finally:
                stream.close()  # before the file closes: its thread reads the file
        finally:
            raw.close()


def read_index(bundle: location.BundlePath) -> BundleIndex:
    """The bundle's validated index; reads only the first member."""
    with open_bundle(bundle) as reader:
        return reader.index


@dataclass(frozen=True)
class VerifiedBundle:
    """What `verify_bundle` found: the index, the archive's sha256, and whether a `.sha256` beside the
    bundle confirmed it (without one, the transfer digest was not checked)."""

    index: BundleIndex
    sha256: str
    transfer_checked: bool


def verify_bundle(bundle: location.BundlePath, progress: Progress | None = None) -> VerifiedBundle:
    """Stream the whole bundle and check every member against the index; IntegrityError on the first fault."""
    with open_bundle(bundle, progress) as reader:
        for file in reader.files():
            file.read()
        assert reader.sha256 is not None
        return VerifiedBundle(reader.index, reader.sha256, reader.transfer_checked)
