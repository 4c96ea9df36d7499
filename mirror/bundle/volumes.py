"""Volume sets (`export --split SIZE`): one export as self-contained bundles that each fit a medium.

Every volume `OUT.001.tar.zst`, `OUT.002.tar.zst`, ... is a valid bundle on its own (index first, then
SHA256SUMS, then its members; `tar --zstd -xf` and `sha256sum -c` work on each), with its own `.sha256`.
Each volume's index describes the whole set (every file of every repo revision, and which volume packs
each content), so any subset of volumes can say what the others hold.

Packing (deterministic: the same store content and options give the same volumes):
- each content goes to one volume, whole, with every file that shares it (the repeats are tar hardlinks);
- a content that cannot fit in a volume on its own is cut into chunks: as many as fill a volume each, and
  the remainder; each chunk is hashed on its own (`chunks/<sha256>/<NNN>` members);
- whole contents and remainders are placed first fit, largest first.
A volume is planned from the exact size of its tar stream and zstd's worst case for it (raw blocks), so it
never exceeds SIZE whatever the data; data that compresses makes smaller volumes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Unpack

from mirror.bundle import (
    BundleIndex,
    BundleSummary,
    Chunk,
    Placement,
    VolumeSet,
    iter_members,
    location,
    read_index,
    write_archive,
)
from mirror.bundle.frames import stream_bound
from mirror.bundle.writer import Packing
from mirror.errors import MirrorError, UsageError
from mirror.hashing import CHUNK
from mirror.store import Store
from mirror.units import format_size

log = logging.getLogger(__name__)

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: tarfile pads the archive to a multiple of this
SUFFIX = ".tar.zst"
_ZERO_SHA = "0" * 64


def volume_names(out: location.BundlePath, count: int) -> list[str]:
    """`models.tar.zst` -> `models.001.tar.zst`, ... (at least three digits, more for 1000 volumes)."""
    base = out.name[: -len(SUFFIX)] if out.name.endswith(SUFFIX) else out.name
    width = max(3, len(str(count)))
    return [f"{base}.{i:0{width}d}{SUFFIX}" for i in range(1, count + 1)]


def tar_capacity(limit: int) -> int:
    """The largest tar stream (a whole number of tar records) whose compressed form fits in limit bytes."""
    lo, hi = 0, limit // RECORD
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if stream_bound(mid * RECORD) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo * RECORD


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _header(name: str, size: int = 0, link_to: str | None = None) -> int:
    """The bytes tarfile writes for a member's header (pax extended header included), as the writer does."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    if link_to is not None:
        info.type = tarfile.LNKTYPE
        info.linkname = link_to
    return len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))


def _sums_line(name: str) -> int:
    return 64 + 2 + len(name.encode("utf-8")) + 1


@dataclass(frozen=True)
class _Item:
    """What goes into one volume: a whole content (chunk None) or one chunk of it."""

    sha256: str
    chunk: int | None
    size: int  # data bytes
    cost: int  # tar bytes it adds, its SHA256SUMS lines included


@dataclass(frozen=True)
class _Plan:
    count: int
    whole: dict[str, int]  # sha256 -> volume
    chunks: dict[str, list[tuple[int, int]]]  # sha256 -> [(volume, size)] in order


def _whole_costs(base: BundleIndex) -> dict[str, tuple[int, int]]:
    """sha256 -> (data size, tar bytes) of each packed content with every file member that shares it."""
    costs: dict[str, tuple[int, int]] = {}
    for m in iter_members(base):
        data = 0 if m.link_to is not None else m.size
        cost = _header(m.name, data, m.link_to) + _padded(data) + _sums_line(m.name)
        costs[m.sha256] = (m.size, costs.get(m.sha256, (0, 0))[1] + cost)
    return costs


# A chunk's header and SHA256SUMS line, with room for any chunk number.
_CHUNK_NAME = f"chunks/{_ZERO_SHA}/{'9' * 12}"
CHUNK_OVERHEAD = _header(_CHUNK_NAME) + _sums_line(_CHUNK_NAME)


def _pack(costs: dict[str, tuple[int, int]], capacity: int) -> _Plan:
    """Place every content: whole where it fits a volume, else in chunks; first fit, largest first.

    `capacity` (tar bytes a volume has for members) must hold a chunk of at least one block.
    """
    per_chunk = (capacity - CHUNK_OVERHEAD) // BLOCK * BLOCK
    items: list[_Item] = []
    for sha, (size, cost) in sorted(costs.items()):
        if cost <= capacity:
            items.append(_Item(sha, None, size, cost))
            continue
        full, rest = divmod(size, per_chunk)
        sizes = [per_chunk] * full + ([rest] if rest else [])
        items += [_Item(sha, i, n, CHUNK_OVERHEAD + _padded(n)) for i, n in enumerate(sizes)]
    free: list[int] = []  # room left in each volume so far
    placed: dict[tuple[str, int | None], int] = {}
    for item in sorted(items, key=lambda i: (-i.cost, i.sha256, -1 if i.chunk is None else i.chunk)):
        volume = next((v for v, room in enumerate(free) if room >= item.cost), len(free))
        if volume == len(free):
            free.append(capacity)
        free[volume] -= item.cost
        placed[item.sha256, item.chunk] = volume + 1
    whole = {sha: v for (sha, chunk), v in placed.items() if chunk is None}
    chunks: dict[str, list[tuple[int, int]]] = {}
    for item in items:  # in chunk order
        if item.chunk is not None:
            chunks.setdefault(item.sha256, []).append((placed[item.sha256, item.chunk], item.size))
    return _Plan(max(1, len(free)), whole, chunks)


def _volume_indexes(
    base: BundleIndex, plan: _Plan, names: list[str], chunk_hashes: dict[str, list[str]] | None
) -> list[BundleIndex]:
    """The index of each volume: the whole description, where each content is, and the volume's number."""
    placements: dict[str, Placement] = dict(base.placements)  # what the target holds (a delta) stays so
    for sha, volume in plan.whole.items():
        placements[sha] = Placement(volume=volume)
    for sha, pieces in plan.chunks.items():
        hashes = chunk_hashes[sha] if chunk_hashes is not None else [_ZERO_SHA] * len(pieces)
        placements[sha] = Placement(
            chunks=tuple(Chunk(v, size, h) for (v, size), h in zip(pieces, hashes, strict=True))
        )
    shared = replace(
        base, placements=dict(sorted(placements.items())), volume_set=VolumeSet("", 0, tuple(names))
    )
    set_id = hashlib.sha256(shared.to_bytes()).hexdigest() if chunk_hashes is not None else _ZERO_SHA
    return [replace(shared, volume_set=VolumeSet(set_id, v, tuple(names))) for v in range(1, len(names) + 1)]


def plan_volumes(base: BundleIndex, limit: int, out: location.BundlePath) -> tuple[_Plan, list[str]]:
    """How `base` (a bundle index, maybe a delta) is spread over volumes of at most `limit` bytes each."""
    record_room = tar_capacity(limit)
    costs = _whole_costs(base)
    reserve = len(base.to_bytes())
    for _ in range(16):
        # What every volume needs besides members: the index member, the SHA256SUMS member's header and
        # padding (its lines are in the members' costs), the two end-of-archive blocks.
        capacity = record_room - BLOCK - _padded(reserve) - BLOCK - (BLOCK - 1) - 2 * BLOCK
        if capacity < CHUNK_OVERHEAD + BLOCK:
            raise _split_too_small(limit, reserve)
        plan = _pack(costs, capacity)
        names = volume_names(out, plan.count)
        # The volumes' indexes differ only in their own number: the last one is the longest.
        need = len(_volume_indexes(base, plan, names, None)[-1].to_bytes())
        if _padded(need) <= _padded(reserve):
            return plan, names
        reserve = need
    raise MirrorError(f"could not plan volumes of {format_size(limit)}; try a larger --split")


def _split_too_small(limit: int, index_size: int) -> MirrorError:
    least = max(1 << 20, 4 * (index_size + RECORD))
    return UsageError(
        f"--split {format_size(limit)} is too small: every volume repeats the index ({index_size} bytes, "
        f"describing every file) besides its share of the data; use at least {format_size(-(-least >> 20) << 20)}"
    )


def _hash_chunks(store: Store, sha256: str, sizes: Iterable[int]) -> list[str]:
    """Each chunk's sha256, read from the blob in one pass that also checks the whole content."""
    whole = hashlib.sha256()
    found = []
    with store.open_blob(sha256) as blob:
        for size in sizes:
            piece = hashlib.sha256()
            left = size
            while left:
                data = blob.read(min(CHUNK, left))
                if not data:
                    raise store.damaged(sha256, "fewer bytes than recorded")
                piece.update(data)
                whole.update(data)
                left -= len(data)
            found.append(piece.hexdigest())
    if whole.hexdigest() != sha256:
        raise store.damaged(sha256, f"content hashing to {whole.hexdigest()}")
    return found


def write_volumes(
    store: Store,
    base: BundleIndex,
    out: location.BundlePath,
    limit: int,
    **packing: Unpack[Packing],
) -> list[BundleSummary]:
    """Write the volumes of `base` beside `out` (`OUT.001.tar.zst`, ...; in a folder or in a bucket), each
    with its `.sha256`.

    Volumes are written one at a time, each under a temp name then renamed (or uploaded): no temporary disk
    beyond the volume being written. Higher-numbered volumes a previous export left under the same names
    go, so a folder (or a bucket's prefix) never mixes two sets.
    """
    plan, names = plan_volumes(base, limit, out)
    chunk_hashes: dict[str, list[str]] = {}
    for sha, pieces in sorted(plan.chunks.items()):
        log.info("hashing %d chunks of %s", len(pieces), sha)
        if (found := store.blob_problem(sha)) not in (None, "missing"):
            raise store.damaged(sha, found)
        try:
            chunk_hashes[sha] = _hash_chunks(store, sha, (size for _, size in pieces))
        except FileNotFoundError:
            raise MirrorError(
                f"the store lacks the blob {sha}; run `mirror sync` again or `mirror verify`"
            ) from None
    indexes = _volume_indexes(base, plan, names, chunk_hashes)
    summaries = []
    for name, index in zip(names, indexes, strict=True):
        index = BundleIndex.from_json(index.to_json())  # never write what a reader would refuse
        path = out.with_name(name)
        location.remove(path.with_name(name + ".sig"))  # a stale signature must not sit beside it
        summaries.append(write_archive(store, index, path, limit=limit, **packing))
    _remove_stale(out, indexes)
    return summaries


def _remove_stale(out: location.BundlePath, indexes: list[BundleIndex]) -> None:
    """Remove the volumes (and side files) of another set written under the same OUT, so that a folder never
    holds volumes of two sets. Only files that are volumes, by their index, are removed (the volumes just
    written are not read again)."""
    assert indexes[0].volume_set is not None
    ours = indexes[0].volume_set.id
    written = set(indexes[0].volume_set.names)
    base = out.name[: -len(SUFFIX)] if out.name.endswith(SUFFIX) else out.name
    pattern = re.compile(rf"^{re.escape(base)}\.\d{{3,}}{re.escape(SUFFIX)}$")
    for path in location.beside(out):
        if not pattern.match(path.name) or path.name in written:
            continue
        try:
            other = read_index(path).volume_set
        except MirrorError:
            continue
        if other is not None and other.id != ours:
            for extra in ("", ".sha256", ".sig"):
                location.remove(path.with_name(path.name + extra))


__all__ = ["plan_volumes", "tar_capacity", "volume_names", "write_volumes"]
