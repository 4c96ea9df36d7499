"""`mirror verify` of the store: re-hash every blob and check every snapshot's files are held, offline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirror.hashing import file_sha256
from mirror.progress import NullProgress, ProgressSink
from mirror.store import Store


@dataclass
class StoreCheck:
    store: str
    blobs: int = 0
    bytes: int = 0
    snapshots: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "ok": self.ok,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "snapshots": self.snapshots,
            "problems": self.problems,
        }


def verify_store(store: Store, progress: ProgressSink | None = None) -> StoreCheck:
    """Every blob's content matches its name; every file a snapshot lists is held with its size."""
    progress = progress or NullProgress()
    check = StoreCheck(store=str(store.root))
    blobs = list(store.iter_blobs())
    progress.start(sum(p.stat().st_size for _, p in blobs), "verify")
    try:
        for name, path in blobs:
            check.blobs += 1
            size = path.stat().st_size
            check.bytes += size
            actual = file_sha256(path)
            if actual != name:
                check.problems.append(f"blob {path}: content hashes to {actual}, not its name")
            progress.update(size)
    finally:
        progress.close()
    for key in store.repos():
        for snap in store.snapshots(key):
            check.snapshots += 1
            for f in snap.files:
                if not store.has_blob(f.sha256, f.size):
                    check.problems.append(
                        f"{key}@{snap.commit}: {f.path} ({f.sha256}) is missing from the store"
                    )
        for name, ref in store.read_refs(key).items():
            if store.read_snapshot(key, ref.commit) is None:
                check.problems.append(f"{key}: revision {name} points at {ref.commit}, which has no snapshot")
    return check
