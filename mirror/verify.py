"""`mirror verify`, offline: re-hash the store (every blob, every snapshot's files held), or a tree an
import wrote (`--target`: every file its receipts list)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from mirror.bundle import location, verify_bundle
from mirror.errors import MirrorError
from mirror.hashing import file_sha256
from mirror.layouts.layout import ExpectedFile
from mirror.paths import is_sha256
from mirror.progress import NullProgress, ProgressSink
from mirror.storage.base import MISSING
from mirror.store import Store


class _Verdict:
    """What both checks report besides their counts: the problems found, and whether there are none."""

    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(cast(Any, self)), "ok": self.ok}


@dataclass
class StoreCheck(_Verdict):
    store: str
    blobs: int = 0
    bytes: int = 0
    snapshots: int = 0
    problems: list[str] = field(default_factory=list)


def verify_store(store: Store, progress: ProgressSink | None = None) -> StoreCheck:
    """Every blob's content matches its name; every file a snapshot lists is held with its size. A damaged
    blob is named with the files that use it and put in doubt, so the next sync that needs it fetches it
    again (see `Store.damaged`).
    MirrorError (exit 1) when the store does not exist or holds nothing: there is nothing to vouch for."""
    progress = progress or NullProgress()
    check = StoreCheck(store=str(store))
    if store.problem() == MISSING:
        raise MirrorError(
            f"the store {store} does not exist: nothing to verify (is --store or $MIRROR_STORE right?)"
        )
    blobs = [(name, blob, store.storage.stat(blob)) for name, blob in store.iter_blobs()]
    if not blobs and not store.repos():
        raise MirrorError(f"the store {store} holds nothing: nothing to verify (sync something first)")
    damaged: set[str] = set()
    uses: dict[str, list[tuple[str, str, int]]] = {}

    def name_damage(sha256: str, found: str) -> None:
        if not uses:  # read every record once, at the first damage
            uses.update(store.blob_uses())
        damaged.add(sha256)
        check.problems.append(str(store.damaged(sha256, found, uses)))

    progress.start(sum(st.size for _, _, st in blobs if st is not None), "verify")
    try:
        for name, blob, st in blobs:
            check.blobs += 1
            if not is_sha256(name):
                check.problems.append(
                    f"blob {store.where(blob)}: not named by a sha256; `mirror gc` removes it"
                )
                continue
            size = st.size if st is not None else 0
            check.bytes += size
            found = store.problem_of(st)  # the look the listing above took
            if found is None:
                actual = store.blob_sha256(name)
                found = None if actual == name else f"{size} bytes hashing to {actual}"
            if found is not None:
                name_damage(name, found)
            progress.update(size)
    finally:
        progress.close()
    for key in store.repos():
        for snap in store.snapshots(key):
            check.snapshots += 1
            for f in snap.files:
                if f.sha256 in damaged:
                    continue
                found = store.blob_problem(f.sha256, f.size)
                if found == "missing":
                    check.problems.append(
                        f"{key}@{snap.commit}: {f.path} ({f.sha256}) is missing from the store; run `mirror "
                        "sync` with a manifest that names it to fetch it again"
                    )
                elif found is not None:
                    name_damage(f.sha256, found)
        for name, ref in store.read_refs(key).items():
            if store.read_snapshot(key, ref.commit) is None:
                check.problems.append(f"{key}: revision {name} points at {ref.commit}, which has no snapshot")
    return check


@dataclass(frozen=True)
class BundleCheck:
    """A bundle that `verify_bundle` streamed whole and found as its index says."""

    bundle: location.BundlePath
    repos: int
    sha256: str
    transfer_checked: bool  # a .sha256 beside it confirmed the digest

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "ok": True,
            "repos": self.repos,
            "sha256": self.sha256,
            "transfer_checked": self.transfer_checked,
        }


def verify_bundles(
    bundles: Sequence[location.BundlePath], progress: ProgressSink | None = None
) -> list[BundleCheck]:
    """Check each bundle, member by member, against its index; IntegrityError on the first fault.
    `progress` gets each bundle's bytes read, one bar per bundle."""
    progress = progress or NullProgress()
    checks = []
    for bundle in bundles:
        progress.start(location.size(bundle), f"verify {bundle.name}")
        try:
            verified = verify_bundle(bundle, progress=progress.update)
        finally:
            progress.close()
        checks.append(
            BundleCheck(bundle, len(verified.index.repos), verified.sha256, verified.transfer_checked)
        )
    return checks


@dataclass
class TargetCheck(_Verdict):
    """`mirror verify --target`: an imported tree re-hashed against the receipts its imports left."""

    target: str
    layout: str
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # revisions the user removed with the clients' tools


def verify_target(layout: str, target: Path, progress: ProgressSink | None = None) -> TargetCheck:
    """Re-hash, offline, every file the receipts in `target` say an import wrote; name each one that
    changed or went missing. A revision the user removed with the layout's own tools is reported apart,
    not as a problem. MirrorError (exit 1) when the target holds no receipt at all."""
    from mirror.layouts import make_layout

    progress = progress or NullProgress()
    writer = make_layout(layout, target)
    expected, problems = writer.expected_files()
    check = TargetCheck(
        target=str(target), layout=layout, problems=list(problems), removed=writer.removed_revisions()
    )
    if not expected and not problems and not check.removed:
        raise MirrorError(
            f"{target} holds no receipt of `mirror import --layout {layout}`: nothing to verify "
            "(is it the right --target and --layout?)"
        )
    wanted: dict[Path, ExpectedFile] = {}
    for f in expected:
        other = wanted.setdefault(f.path, f)
        if (other.size, other.sha256) != (f.size, f.sha256):
            check.problems.append(f"{_show(f.path, target)}: receipts disagree on its content")
    progress.start(sum(f.size for f in wanted.values()), "verify")
    try:
        for path, f in sorted(wanted.items()):
            where = _show(path, target)
            try:
                size = path.stat().st_size
                digest = file_sha256(path) if path.is_file() else None
            except FileNotFoundError:
                check.problems.append(
                    f"{where}: missing (the import wrote {f.size} bytes, sha256 {f.sha256})"
                )
                continue
            except OSError as e:
                check.problems.append(f"{where}: unreadable ({e.strerror or e})")
                continue
            check.files += 1
            check.bytes += size
            progress.update(f.size)
            if digest is None:
                check.problems.append(f"{where}: not a file")
            elif (size, digest) != (f.size, f.sha256):
                check.problems.append(
                    f"{where}: changed ({size} bytes, sha256 {digest}; the import wrote {f.size} bytes, "
                    f"sha256 {f.sha256})"
                )
    finally:
        progress.close()
    return check


def _show(path: Path, target: Path) -> str:
    try:
        return path.relative_to(target).as_posix()
    except ValueError:
        return str(path)
