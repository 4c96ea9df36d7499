"""What a target already holds, in any of its repos: content files with what is known of each without reading
it (a receipt's sha256, an LFS blob's name). `mirror inventory` hashes the rest; an import looks here for
content a delta (or a volume not given) leaves to the target, and hashes a file before it reuses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mirror.hashing import HashCache
from mirror.layouts.layout import Layout


@dataclass(frozen=True)
class HeldFile:
    """A content file of the target. `sha256` is what its receipt or name says (None: only hashing tells)."""

    path: Path
    size: int
    sha256: str | None


def held_files(layout: Layout) -> Iterator[HeldFile]:
    """Every content file of the target once (hardlinks of one file count once), in a stable order.

    A receipt's sha256 is taken for a file that still has the size the import wrote (the import verified it;
    `mirror verify --target` re-checks); an LFS blob's name is its sha256.
    """
    known: dict[tuple[int, int], tuple[int, str]] = {}
    expected, _ = layout.expected_files()  # unreadable receipts just tell nothing here
    for f in expected:
        try:
            st = f.path.stat()  # through the snapshot symlink, to the blob
        except OSError:
            continue
        if st.st_size == f.size:
            known[st.st_dev, st.st_ino] = (f.size, f.sha256)
    seen: set[tuple[int, int]] = set()
    for path, named in layout.content_files():
        try:
            st = path.stat(follow_symlinks=False)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        receipt = known.get(key)
        yield HeldFile(path, st.st_size, receipt[1] if receipt is not None else named)


class TargetContent:
    """Where in the target a content may be: files whose receipt or name gives its sha256, hf blobs named by
    the file's etag, and files of the right size nothing says anything about. `find` hashes each candidate
    before it is used, so a damaged one is never taken."""

    def __init__(self, layout: Layout) -> None:
        self._by_sha: dict[str, list[Path]] = {}
        self._by_name: dict[str, list[Path]] = {}
        self._unknown: dict[int, list[Path]] = {}
        for f in held_files(layout):
            if f.sha256 is not None:
                self._by_sha.setdefault(f.sha256, []).append(f.path)
            else:
                self._by_name.setdefault(f.path.name, []).append(f.path)
                self._unknown.setdefault(f.size, []).append(f.path)

    def candidates(self, sha256: str, size: int, etag: str) -> list[Path]:
        found = self._by_sha.get(sha256, []) + self._by_name.get(etag, []) + self._unknown.get(size, [])
        return list(dict.fromkeys(found))

    def damaged(self, sha256: str, size: int, etag: str, hashes: HashCache) -> list[str]:
        """The files that say they hold this content (by receipt or name) but do not: what to name as corrupt."""
        said = self._by_sha.get(sha256, []) + self._by_name.get(etag, [])
        return [str(p) for p in dict.fromkeys(said) if not hashes.holds(p, size, sha256)]
