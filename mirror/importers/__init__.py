"""Restore a bundle into a layout: verify every byte while streaming, then publish repo by repo.

Adding a layout is one module with a `Layout` subclass, and one line in `LAYOUTS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from mirror.bundle import BundleFile, BundleIndex, IndexedRepo, Progress, open_bundle
from mirror.errors import IntegrityError, MirrorError, UsageError
from mirror.importers.dir import DirLayout
from mirror.importers.hf import HfLayout
from mirror.importers.layout import ImportReport, Layout, RepoReport, link_or_copy
from mirror.importers.modelscope import ModelScopeLayout
from mirror.signing import TrustPolicy, check_trust  # signed bundles (issue 5 item 7)
from mirror.store import RepoKey

LAYOUTS: dict[str, Callable[[Path], Layout]] = {
    "hf": HfLayout,
    "modelscope": ModelScopeLayout,
    "dir": DirLayout,
}


class BundleImportError(IntegrityError):
    """Some repos of a bundle failed verification and were not published; `report` lists those that were."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


def make_layout(layout: str, target: Path) -> Layout:
    try:
        factory = LAYOUTS[layout]
    except KeyError:
        raise UsageError(f"unknown layout {layout!r}; choose one of {', '.join(sorted(LAYOUTS))}") from None
    return factory(Path(target))


def receipt_for(bundle: Path, sha256: str, index: BundleIndex, repo: IndexedRepo) -> dict[str, Any]:
    """What an import records about a repo: which bundle, which revisions, which files."""
    return {
        "bundle": bundle.name,
        "bundle_sha256": sha256,
        "bundle_created": index.created,
        "bundle_tool_version": index.tool_version,
        "source": repo.source,
        "repo_type": repo.repo_type,
        "repo_id": repo.repo_id,
        **({"hf_id": repo.hf_id} if repo.hf_id is not None else {}),
        "revisions": [{"name": n, "commit": c} for n, c in repo.revisions],
        "commits": [
            {
                "commit": c.commit,
                "complete": c.complete,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in c.files],
            }
            for c in repo.commits
        ],
    }


def import_bundle(
    bundle: Path,
    layout: str,
    target: Path,
    *,
    progress: Progress | None = None,
    trust: TrustPolicy | None = None,
) -> ImportReport:
    """Verify `bundle` while streaming it once, and publish each repo whose files all verified into `target`.

    Repos with a damaged file are not published (BundleImportError, after the others are); a damaged or
    hostile archive publishes nothing (IntegrityError). Repos in the target the bundle does not name are
    never touched. `progress` gets the compressed bytes read (the bundle's size is the total).
    """
    bundle = Path(bundle)
    writer = make_layout(layout, target)
    try:
        with open_bundle(bundle, progress) as reader:
            index = reader.index
            # Signed bundles (mirror.signing): refuse an unsigned, untrusted, altered, expired or rolled-back
            # bundle before anything is written.
            accepted = check_trust(trust, bundle, index, writer.name, Path(target))
            writer.check(index)
            with ExitStack() as stack:
                staging = {repo.key: stack.enter_context(writer.stage(repo)) for repo in index.repos}
                content: dict[RepoKey, dict[str, Path]] = {key: {} for key in staging}
                verified: dict[str, Path] = {}  # member name -> its staged content
                failed: dict[RepoKey, str] = {}
                for file in reader.files():
                    key = file.member.repo.key
                    try:
                        _receive(file, staging[key], content[key], verified)
                    except IntegrityError as e:
                        failed.setdefault(key, str(e))
                sha256 = reader.sha256 or ""
                reports = [
                    writer.publish(repo, content[repo.key], receipt_for(bundle, sha256, index, repo))
                    for repo in index.repos
                    if repo.key not in failed
                ]
    except OSError as e:
        raise MirrorError(f"importing {bundle.name} into {target} failed: {e}") from e
    report = ImportReport(
        bundle=bundle, sha256=sha256, layout=writer.name, target=Path(target), repos=tuple(reports)
    )
    if accepted is not None and reports:  # mirror.signing: remember the sequence of what was published
        accepted.record()
    if failed:
        reasons = "; ".join(f"{key}: {why}" for key, why in failed.items())
        raise BundleImportError(
            f"{bundle.name}: {len(failed)} repo(s) failed verification and were not imported ({reasons}); "
            f"{len(reports)} other repo(s) were imported",
            report,
        )
    return report


def _receive(file: BundleFile, staging: Path, content: dict[str, Path], verified: dict[str, Path]) -> None:
    """Verify one member into the repo's staging folder (content named by sha256, each once per repo)."""
    sha = file.member.file.sha256
    if file.link_to is not None:
        file.read()  # raises if the linked member failed
        if sha not in content:
            dest = staging / sha
            link_or_copy(verified[file.link_to], dest)
            content[sha] = dest
    elif sha in content:
        file.read()  # the same content again in this repo: verify it, keep the first copy
    else:
        part = staging / f"{sha}.part"
        try:
            with open(part, "wb") as out:
                file.read(out.write)
            os.replace(part, staging / sha)
        finally:
            part.unlink(missing_ok=True)
        content[sha] = staging / sha
    verified[file.member.name] = content[sha]


__all__ = [
    "LAYOUTS",
    "BundleImportError",
    "ImportReport",
    "Layout",
    "RepoReport",
    "import_bundle",
    "make_layout",
    "receipt_for",
]
