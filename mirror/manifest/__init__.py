"""Manifest: parse and validate a v1 YAML manifest into typed, frozen model specs, and the revision
requests (`mirror.repo.RevisionRequest`) they make.

Pure: no network, no printing. Every problem is a ManifestError naming the file, the 1-based line
and the key path (``models[2].revisions``; list indices count from 0, as in jq).

`nodes` composes the YAML into a node tree that keeps every line and reports a problem at its line,
`values` checks one value (repo id, revision, pattern, source...), `schema` walks the tree: which keys go
where, the defaults, one entry per repo; `policy` reads a `policy:` mapping (and `--policy FILE`);
`spec` holds the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mirror.bounded import MANIFEST
from mirror.manifest.nodes import read_text
from mirror.manifest.policy import load_policy_file, parse_policy
from mirror.manifest.schema import parse_manifest
from mirror.manifest.spec import Manifest, ModelSpec
from mirror.repo import RevisionRequest

__all__ = [
    "Manifest",
    "ModelSpec",
    "load_manifest",
    "load_manifests",
    "load_policy_file",
    "load_requests",
    "parse_manifest",
    "parse_policy",
]


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate one manifest file."""
    return parse_manifest(read_text(path, MANIFEST), str(path))


def load_manifests(paths: Iterable[str | Path]) -> list[Manifest]:
    """Load several manifests. The same repo may appear in more than one; callers take the union."""
    return [load_manifest(path) for path in paths]


def load_requests(paths: Iterable[str | Path]) -> list[RevisionRequest]:
    """Every revision the manifests ask for, as the requests the engines take (in manifest order)."""
    return [r for m in load_manifests(paths) for r in m.requests()]
