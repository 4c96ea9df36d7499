"""`mirror export` in one call: choose what of the store to pack, describe it in an index (a delta when
told what the far side holds; each commit with its validation scan), judge each revision by its policy (the
same check as sync's: a denied one refuses the whole export before anything is written), write it as one
bundle or as volumes, and sign each one.

The CLI parses the options and prints the result; everything between is here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirror.bundle import (
    BundleIndex,
    BundleSummary,
    build_index,
    iter_members,
    select_all,
    select_requests,
    write_archive,
)
from mirror.bundle.location import BundlePath, remove
from mirror.bundle.volumes import write_volumes
from mirror.clock import Clock
from mirror.errors import MirrorError, PolicyDenied
from mirror.inventory import had_by_bundles, read_have
from mirror.progress import NullProgress, ProgressSink
from mirror.repo import RepoKey, RevisionRequest
from mirror.signing import Signed, sign_bundle, signature_path
from mirror.snapshot import FileRecord
from mirror.store import Store
from mirror.validate.policy import DEFAULT_POLICY, Policy, Verdict, ruling_words

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signer:
    """How to sign what an export writes: every bundle (or volume) with `key`, the same sequence and
    expiry for all of them (they are one export), the signing time told by `clock`."""

    key: Ed25519PrivateKey
    sequence: int | None = None  # default: the signing time in unix seconds
    lifetime: int | None = None  # seconds from signing to expiry; None: never expires
    clock: Clock = field(kw_only=True)


@dataclass(frozen=True)
class Exported:
    """One bundle (or volume) written, and its signature when signed."""

    summary: BundleSummary
    signature: Signed | None

    def to_json(self) -> dict[str, Any]:
        data = self.summary.to_json()
        if self.signature is not None:
            data["signature"] = self.signature.to_json()
        return data


@dataclass(frozen=True)
class RevisionVerdict:
    """A revision exported, and the verdict of its policy on its commit's scan."""

    repo: RepoKey
    revision: str
    commit: str
    verdict: Verdict

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.repo.to_json(),
            "revision": self.revision,
            "commit": self.commit,
            "verdict": self.verdict.to_json(),
        }


def judge_export(index: BundleIndex, requests: Sequence[RevisionRequest] | None) -> list[RevisionVerdict]:
    """Each revision of `index` judged by its policy: the policy of each request naming it (a manifest
    entry's `policy:`), the default policy when exporting the whole store (`requests` None)."""
    policies: dict[tuple[RepoKey, str], list[Policy]] = {}
    for request in requests or ():
        found = policies.setdefault((request.key, request.revision), [])
        if request.policy not in found:
            found.append(request.policy)
    judged = []
    for repo in index.repos:
        for name, commit in repo.revisions:
            scan = repo.commit(commit).scan
            assert scan is not None, "build_index gives every commit its scan"
            for policy in policies.get((repo.key, name), [DEFAULT_POLICY]):
                judged.append(RevisionVerdict(repo.key, name, commit, scan.verdict(policy)))
    return judged


def refusal(judged: Sequence[RevisionVerdict]) -> PolicyDenied | None:
    """The error that refuses an export some revision of which its policy denies (naming each revision,
    commit, file, finding and rule); None when none is denied."""
    denied = [j for j in judged if not j.verdict.ok]
    if not denied:
        return None
    return PolicyDenied(
        "the export is refused by the policy, nothing was written: "
        + "; ".join(f"{j} (commit {j.commit}): {j.verdict.denied_words()}" for j in denied)
        + " (leave the revision out of the manifest, or change its `policy:` if the finding is acceptable)"
    )


@dataclass(frozen=True)
class ExportResult:
    index: BundleIndex
    bundles: tuple[Exported, ...]
    volumes: bool  # written as volumes (`--split`)
    delta: bool  # told what the far side holds (`--have`/`--since`)
    revisions: tuple[RevisionVerdict, ...] = ()  # each revision's verdict

    @property
    def left_to_target(self) -> list[FileRecord]:
        """The files a delta does not carry: the far side holds their content."""
        return self.index.left_in_target()

    def to_json(self) -> dict[str, Any]:
        """The bundle written (its fields at the top), or `volumes`: each volume's; a delta's `in_target`."""
        data: dict[str, Any] = {}
        if self.volumes:
            data["volumes"] = [bundle.to_json() for bundle in self.bundles]
        else:
            for bundle in self.bundles:
                data.update(bundle.to_json())
        if self.delta:
            elsewhere = self.left_to_target
            data["in_target"] = {"files": len(elsewhere), "bytes": sum(f.size for f in elsewhere)}
        data["revisions"] = [r.to_json() for r in self.revisions]
        return data


def far_side_holds(have_files: Iterable[Path], since_bundles: Iterable[BundlePath]) -> dict[str, int] | None:
    """What the far side holds (sha256 -> size), from `mirror inventory` files and earlier bundles; None
    when neither is given (a full export)."""
    have_files, since_bundles = list(have_files), list(since_bundles)
    if not have_files and not since_bundles:
        return None
    have: dict[str, int] = {}
    for have_file in have_files:
        have.update(read_have(have_file))
    have.update(had_by_bundles(since_bundles))
    return have


def export(
    store: Store,
    requests: Sequence[RevisionRequest] | None,
    output: BundlePath,
    *,
    level: int | None = None,
    threads: int = -1,
    have: Mapping[str, int] | None = None,
    split: int | None = None,
    created: int | None = None,
    signer: Signer | None = None,
    progress: ProgressSink | None = None,
    codec: str | None = None,
) -> ExportResult:
    """Pack what `requests` name (None: the whole store) into `output` (a file, or an object in a bucket:
    everything beside it goes there too), or into volumes of at most `split` bytes beside it; with `have`,
    a delta. `codec` (bytegroup; not with `split`) packs the 16-bit tensors of safetensors files grouped
    by byte (bundle format 1.3). `progress` gets the bytes packed. The creation time is `created`
    (unix seconds; the CLI passes SOURCE_DATE_EPOCH) when given, else the newest sync (see `build_index`).
    Each revision is judged by its policy first (`judge_export`): PolicyDenied, and nothing written, when one
    is denied; what is warned about is logged."""
    if codec is not None and split is not None:
        raise MirrorError(f"--codec {codec} cannot make volumes (--split); export with one or the other")
    selection = select_requests(store, requests) if requests is not None else select_all(store)
    if not selection:
        raise MirrorError(f"the store {store} holds nothing to export; run `mirror sync MANIFEST` first")
    index = build_index(store, selection, created=created, have=have, codec=codec)
    judged = judge_export(index, requests)
    denied = refusal(judged)
    if denied is not None:
        raise denied
    for revision in judged:
        for ruling in revision.verdict.warned:
            log.warning("%s: %s", revision, ruling_words(ruling))
    if split is None:
        remove(signature_path(output))  # a stale signature must not sit beside the new bundle
    progress = progress or NullProgress()
    progress.start(sum(m.size for m in iter_members(index)), "export")
    try:
        if split is None:
            summaries = [
                write_archive(store, index, output, level=level, threads=threads, progress=progress.update)
            ]
        else:
            summaries = write_volumes(
                store, index, output, split, level=level, threads=threads, progress=progress.update
            )
    finally:
        progress.close()
    now = int(signer.clock.time()) if signer is not None else 0
    bundles = []
    for summary in summaries:
        signed = None
        if signer is not None:
            sequence = now if signer.sequence is None else signer.sequence
            expires = now + signer.lifetime if signer.lifetime is not None else None
            signed = sign_bundle(
                summary.path,
                signer.key,
                clock=signer.clock,
                index_bytes=summary.index_bytes,
                sequence=sequence,
                expires=expires,
            )
        bundles.append(Exported(summary, signed))
    return ExportResult(
        index, tuple(bundles), volumes=split is not None, delta=have is not None, revisions=tuple(judged)
    )


__all__ = [
    "ExportResult",
    "Exported",
    "RevisionVerdict",
    "Signer",
    "export",
    "far_side_holds",
    "judge_export",
    "refusal",
]
