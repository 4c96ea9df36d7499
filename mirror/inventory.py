"""What the far side already holds, so an export packs only what it lacks (a delta).

`mirror inventory` runs on the air-gapped machine and writes a small JSON file (`have.json`) that travels
back across the gap: every content the target holds, by sha256 and size, and its repos with their
revisions and commits (for the operator; deltas are decided by content alone). `mirror export --have`
reads it; `--since` gets the same from the indexes of earlier bundles.

Where a content's sha256 comes from, without reading it when something already says it:
- files an import wrote: the receipt's sha256 (the import verified every byte), if the file still has the
  size it had;
- blobs of a Hugging Face cache filled by huggingface_hub itself: an LFS blob is named by its sha256, and
  the name is taken (hashing hundreds of GB of weights to write a few KB would be the whole cost);
- everything else (an ordinary blob is named by its git sha1; real files in snapshots/; ModelScope's own
  downloads) is hashed.
A name or receipt that no longer tells the truth (bit rot) costs nothing here: an import hashes every
file it takes from the target before using it, and names one that does not match (exit 4).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.bounded import HAVE, parse_json, read_bounded
from mirror.bundle import read_index
from mirror.bundle.location import BundlePath
from mirror.errors import UsageError
from mirror.fsutil import atomic_write_bytes
from mirror.layouts import make_layout
from mirror.layouts.held import held_files
from mirror.paths import is_sha256
from mirror.progress import NullProgress, ProgressSink
from mirror.report import HeldRepo

FORMAT = "mirror-inventory"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Inventory:
    """What a target holds: content sha256 -> size, and its repos."""

    layout: str
    blobs: Mapping[str, int]
    repos: tuple[HeldRepo, ...]

    def to_bytes(self) -> bytes:
        """Deterministic, one repo or blob per line: small to carry, easy to read and to diff."""

        def line(value: Any) -> str:
            return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)

        repos = ",\n".join(f"  {line(r.to_json())}" for r in self.repos)
        blobs = ",\n".join(f"  {line({'sha256': s, 'size': n})}" for s, n in sorted(self.blobs.items()))
        text = (
            "{\n"
            f' "format": "{FORMAT}",\n'
            f' "format_version": {FORMAT_VERSION},\n'
            f' "layout": {line(self.layout)},\n'
            f' "bytes": {sum(self.blobs.values())},\n'
            f' "repos": [\n{repos}\n ],\n'
            f' "blobs": [\n{blobs}\n ]\n'
            "}\n"
        )
        return text.replace("[\n\n ]", "[]").encode("utf-8")


@dataclass(frozen=True)
class InventoryStats:
    files: int  # content files looked at
    hashed: int  # of which hashed
    hashed_bytes: int


def take_inventory(
    layout: str, target: Path | str, progress: ProgressSink | None = None
) -> tuple[Inventory, InventoryStats]:
    """The inventory of a target (`--layout`, `--target`); a target that does not exist holds nothing."""
    progress = progress or NullProgress()
    writer = make_layout(layout, target)
    held = list(held_files(writer))
    unknown = [h for h in held if h.sha256 is None]
    blobs: dict[str, int] = {}
    hashed_bytes = 0
    progress.start(sum(h.size for h in unknown), "inventory")
    try:
        for h in held:
            sha = h.sha256
            if sha is None:
                try:
                    sha = _hash(h.path, progress)
                except OSError:
                    continue  # gone or unreadable meanwhile: not held, as far as a delta may count on it
                hashed_bytes += h.size
            blobs[sha] = h.size
    finally:
        progress.close()
    named = dict(writer.named_content())  # by name: nothing to hash
    blobs.update(named)
    inventory = Inventory(writer.name, dict(sorted(blobs.items())), tuple(writer.held_repos()))
    return inventory, InventoryStats(len(held) + len(named), len(unknown), hashed_bytes)


@dataclass(frozen=True)
class InventoryWritten:
    """What `mirror inventory` wrote where, and what it had to hash for it."""

    output: Path
    target: Path | str  # str: a store's s3:// URL
    inventory: Inventory
    stats: InventoryStats

    @property
    def bytes(self) -> int:
        return sum(self.inventory.blobs.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "target": str(self.target),
            "layout": self.inventory.layout,
            "blobs": len(self.inventory.blobs),
            "bytes": self.bytes,
            "repos": len(self.inventory.repos),
            "files": self.stats.files,
            "hashed_files": self.stats.hashed,
            "hashed_bytes": self.stats.hashed_bytes,
        }


def write_inventory(
    layout: str, target: Path | str, output: Path, progress: ProgressSink | None = None
) -> InventoryWritten:
    """Take the inventory of a target and write it to `output` (atomically), for `mirror export --have`."""
    held, stats = take_inventory(layout, target, progress=progress)
    atomic_write_bytes(output, held.to_bytes())
    return InventoryWritten(output, target, held, stats)


def _hash(path: Path, progress: ProgressSink) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            progress.update(len(chunk))
    return digest.hexdigest()


def read_have(path: Path) -> dict[str, int]:
    """sha256 -> size from a `mirror inventory` file; UsageError (exit 2) naming the file if it is not one."""
    try:
        data = parse_json(read_bounded(path, HAVE, UsageError), HAVE)
    except ValueError as e:
        raise UsageError(f"{path} is not a `mirror inventory` file: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path} is not a `mirror inventory` file (its format is not {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise UsageError(
            f"{path}: inventory format version {data.get('format_version')!r} is not supported (this mirror "
            f"reads {FORMAT_VERSION}); run the same mirror version on both sides"
        )
    blobs = data.get("blobs")
    if not isinstance(blobs, list):
        raise UsageError(f"{path}: 'blobs' is missing or not a list")
    have: dict[str, int] = {}
    for i, blob in enumerate(blobs):
        sha = blob.get("sha256") if isinstance(blob, dict) else None
        size = blob.get("size") if isinstance(blob, dict) else None
        if not isinstance(sha, str) or not is_sha256(sha) or not isinstance(size, int) or size < 0:
            raise UsageError(f"{path}: blobs[{i}] is not {{'sha256': <64 hex>, 'size': <bytes>}}")
        have[sha] = size
    return have


def had_by_bundles(bundles: Iterable[BundlePath]) -> dict[str, int]:
    """sha256 -> size of everything earlier bundles packed (read from their indexes only): a volume's index
    describes its whole set, so any volume of a set stands for all of it. What a delta left in the target
    is not counted: only what the bundles carried."""
    had: dict[str, int] = {}
    for bundle in bundles:
        index = read_index(bundle)
        for repo in index.repos:
            for commit in repo.commits:
                for f in commit.files:
                    if not index.placement(f.sha256).in_target:
                        had[f.sha256] = f.size
    return had


__all__ = ["Inventory", "InventoryStats", "had_by_bundles", "read_have", "take_inventory"]
