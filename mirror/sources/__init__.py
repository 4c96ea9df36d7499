"""The hubs behind one small interface: resolve a revision to a commit and its files, and address a file.

A source only builds URLs and parses answers; the requests (mirror.http) and the transfer (retries,
hashing, progress) are shared by all sources.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mirror.errors import HubError, UsageError
from mirror.http import FileRequest, TokenHint, session
from mirror.paths import check_commit, check_tree, is_commit, is_sha256
from mirror.repo import HUBS
from mirror.settings import Settings, check_endpoint

if TYPE_CHECKING:
    from mirror.sources.hub_scan import HubScan


@dataclass(frozen=True)
class RemoteFile:
    """A file as the hub lists it. `sha256` is known for LFS files (and every ModelScope file);
    `oid` is the git blob id (for LFS files, the pointer's), the hash to check when there is no sha256."""

    path: str
    size: int
    oid: str | None
    lfs: bool
    sha256: str | None


@dataclass(frozen=True)
class RemoteSnapshot:
    commit: str
    files: tuple[RemoteFile, ...]


def check_listing(remote: RemoteSnapshot, where: str) -> RemoteSnapshot:
    """A hub's listing, refused unless it can be a real tree (see paths.tree_problems) whose every file has a
    size and a hash to check it against: one check for every hub, before anything of it is fetched or
    recorded."""
    check_commit(remote.commit)
    check_tree((f.path for f in remote.files), f"the hub's listing of {where} at {remote.commit}")
    for f in remote.files:
        size_ok = isinstance(f.size, int) and not isinstance(f.size, bool) and f.size >= 0
        oid_ok = f.oid is None or (isinstance(f.oid, str) and is_commit(f.oid))
        sha_ok = f.sha256 is None or (isinstance(f.sha256, str) and is_sha256(f.sha256))
        if not (size_ok and oid_ok and sha_ok) or (f.oid is None and f.sha256 is None):
            raise HubError(
                f"{where}: the hub lists {f.path!r} with size {f.size!r:.40}, git oid {f.oid!r:.80} and sha256 "
                f"{f.sha256!r:.80}: not a size and a hash to check the file against"
            )
    return remote


class HubSource:
    """What every source holds: its endpoint, the headers its token makes (`headers`, the hub's own), and the
    hint an access error gives about the token."""

    name: str

    def __init__(self, endpoint: str, token: str | None, token_hint: TokenHint) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._headers = self.headers(token)
        self._token_hint = token_hint

    @staticmethod
    def headers(token: str | None) -> dict[str, str]:
        raise NotImplementedError


class Source(Protocol):
    name: str

    def resolve(self, repo_id: str, repo_type: str, revision: str) -> RemoteSnapshot:
        """One metadata request: the commit a revision names and every file there."""
        ...

    def commit_of(self, repo_id: str, repo_type: str, revision: str) -> str | None:
        """The commit a revision names, by a request lighter than `resolve` (a no-op sync's only one);
        None where the hub has no such request, and `resolve` is asked instead."""
        ...

    def file_request(self, repo_id: str, repo_type: str, commit: str, path: str) -> FileRequest:
        """Where to GET a file of a commit, with the headers (auth) it needs."""
        ...

    def hub_scan(self, repo_id: str, repo_type: str, commit: str, paths: Iterable[str]) -> HubScan:
        """The hub's own scan of `paths` (files of `commit`): findings of kind hub_flagged, and notes; never
        raises for the hub's answers (a sync does not depend on them)."""
        ...


def open_source(name: str, settings: Settings, *, endpoint: str | None, token_env: str | None) -> Source:
    """The source for a hub, at a manifest's `endpoint:` or the hub's variable; UsageError (exit 2) for an
    endpoint that is not an http(s) URL, before any request."""
    if name not in HUBS:
        raise UsageError(f"source {name!r} is not supported yet")
    token_var, endpoint_var = HUBS[name].token_env, HUBS[name].endpoint_env
    token = settings.token(token_env, token_var)
    hint = TokenHint(token_env or token_var, sent=token is not None, named=token_env is not None)
    default = settings.hf_endpoint if name == "huggingface" else settings.modelscope_endpoint
    url = check_endpoint(endpoint or default, "the manifest's endpoint" if endpoint else endpoint_var)
    session()  # the HTTP client, made here, once: its imports are slow under threads
    if name == "huggingface":
        from mirror.sources.huggingface import HuggingFaceSource

        return HuggingFaceSource(url, token, hint)
    from mirror.sources.modelscope import ModelScopeSource

    return ModelScopeSource(url, token, hint)
