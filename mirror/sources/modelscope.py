"""The ModelScope source: the URLs of its files API and what its answers mean (requests: mirror.http).

    GET {endpoint}/api/v1/models/{owner}/{name}/repo/files?Revision=R&Recursive=True   listing + sha256
    GET {endpoint}/api/v1/models/{owner}/{name}/repo?Revision=C&FilePath=P             file content

The listing gives every file's sha256, so each download is checked against it; the git blob ids the HF
cache needs are computed while the files stream (see transfer.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from mirror.errors import HubError, NotFoundError, UsageError
from mirror.http import FileRequest, get_json, modelscope_headers
from mirror.paths import is_commit
from mirror.sources import HubSource, RemoteFile, RemoteSnapshot
from mirror.sources.hub_scan import HubScan


class ModelScopeSource(HubSource):
    name = "modelscope"
    headers = staticmethod(modelscope_headers)

    def _repo_url(self, repo_id: str, repo_type: str) -> str:
        if repo_type != "model":
            raise UsageError(f"{repo_id}: ModelScope {repo_type} repos are not supported (only models)")
        owner, sep, name = repo_id.partition("/")
        if not sep:
            raise UsageError(f"{repo_id}: ModelScope repo ids are owner/name")
        return f"{self.endpoint}/api/v1/models/{quote(owner, safe='')}/{quote(name, safe='')}"

    def commit_of(self, repo_id: str, repo_type: str, revision: str) -> str | None:
        return None  # the files API lists the files with the commit: `resolve` is the one request

    def resolve(self, repo_id: str, repo_type: str, revision: str) -> RemoteSnapshot:
        where = f"modelscope {repo_id} at revision {revision!r} on {self.endpoint}"
        url = f"{self._repo_url(repo_id, repo_type)}/repo/files"
        params = {"Revision": revision, "Recursive": "True"}
        try:
            payload: Any = get_json(url, where, self._token_hint, headers=self._headers, params=params)
            entries = payload["Data"]["Files"]
        except (ValueError, KeyError, TypeError):
            raise HubError(f"{where}: the hub's file listing is not what ModelScope sends") from None
        if not payload.get("Success", True):
            raise NotFoundError(f"{where}: {payload.get('Message') or 'the hub refused the listing'}")
        try:
            blobs = [e for e in entries if e.get("Type") == "blob"]
            files = tuple(
                RemoteFile(
                    path=str(e["Path"]),
                    size=int(e["Size"]),
                    oid=None,
                    lfs=bool(e.get("IsLFS")),
                    sha256=str(e["Sha256"]).lower(),
                )
                for e in blobs
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise HubError(
                f"{where}: an entry of the hub's file listing is not what ModelScope sends"
            ) from None
        commits = {str(e.get("Revision", "")) for e in blobs}
        commit = revision if is_commit(revision) else (commits.pop() if len(commits) == 1 else "")
        if not is_commit(commit):
            raise HubError(f"{where}: the listing does not name one commit for this revision")
        return RemoteSnapshot(commit=commit, files=files)

    def hub_scan(self, repo_id: str, repo_type: str, commit: str, paths: Iterable[str]) -> HubScan:
        """No request: ModelScope's API (its files listing, its model info; modelscope_hub's client) reports no
        scan of its own for a file."""
        return HubScan(
            notes=(f"modelscope {repo_id} at {commit}: ModelScope does not report a scan of its own",)
        )

    def file_request(self, repo_id: str, repo_type: str, commit: str, path: str) -> FileRequest:
        url = f"{self._repo_url(repo_id, repo_type)}/repo?Revision={quote_plus(commit)}&FilePath={quote_plus(path)}"
        return FileRequest(url=url, headers=dict(self._headers), token_hint=self._token_hint)
