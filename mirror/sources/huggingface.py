"""The Hugging Face Hub source, on huggingface_hub's own HTTP session, headers and error mapping.

The two metadata requests are the ones huggingface_hub's `HfApi.model_info` (`dataset_info`) makes,
sent through the same session; not importing `HfApi` itself keeps a cron run's start short.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mirror.errors import HubError, NotFoundError, RetryableError
from mirror.retry import RETRY_STATUS, TokenHint, request_error, retry_after_seconds
from mirror.sources import FileRequest, RemoteFile, RemoteSnapshot


class HuggingFaceSource:
    name = "huggingface"

    def __init__(self, endpoint: str, token: str | None, token_hint: TokenHint) -> None:
        from huggingface_hub.utils._headers import build_hf_headers
        from huggingface_hub.utils._http import get_session

        get_session()  # imported and made here, once: imports are slow in threads
        self.endpoint = endpoint.rstrip("/")
        self._headers = build_hf_headers(token=token, library_name="mirror")
        self._token_hint = token_hint

    def resolve(self, repo_id: str, repo_type: str, revision: str) -> RemoteSnapshot:
        info = self._info(repo_id, repo_type, revision, blobs=True)
        files = []
        for s in _list(info.get("siblings")):
            lfs = s.get("lfs") if isinstance(s.get("lfs"), dict) else None
            try:
                size = int((lfs or s).get("size") or 0)
            except (TypeError, ValueError):
                where = _where(repo_id, repo_type, revision, self.endpoint)
                raise HubError(
                    f"{where}: the hub lists {s.get('rfilename')!r:.80} with no valid size"
                ) from None
            files.append(
                RemoteFile(
                    path=str(s.get("rfilename", "")),
                    size=size,
                    oid=s.get("blobId"),
                    lfs=lfs is not None,
                    sha256=lfs.get("sha256") if lfs else None,
                )
            )
        return RemoteSnapshot(commit=self._sha(info, repo_id, repo_type, revision), files=tuple(files))

    def commit_of(self, repo_id: str, repo_type: str, revision: str) -> str | None:
        """The commit `revision` names, from the light request `snapshot_download` makes (no file metadata)."""
        return self._sha(self._info(repo_id, repo_type, revision, blobs=False), repo_id, repo_type, revision)

    def file_request(self, repo_id: str, repo_type: str, commit: str, path: str) -> FileRequest:
        from huggingface_hub import hf_hub_url

        url = hf_hub_url(repo_id, path, repo_type=repo_type, revision=commit, endpoint=self.endpoint)
        return FileRequest(url=url, headers=dict(self._headers), token_hint=self._token_hint)

    def _info(self, repo_id: str, repo_type: str, revision: str, *, blobs: bool) -> dict[str, Any]:
        """`GET /api/{models,datasets}/{repo}/revision/{revision}[?blobs=true]`, as HfApi sends it."""
        from huggingface_hub.utils._http import get_session, hf_raise_for_status

        where = _where(repo_id, repo_type, revision, self.endpoint)
        url = f"{self.endpoint}/api/{repo_type}s/{repo_id}/revision/{quote(revision, safe='')}"
        try:
            response = get_session().get(
                url, headers=self._headers, params={"blobs": True} if blobs else None
            )
            hf_raise_for_status(response)
            data = response.json()
        except Exception as e:  # noqa: BLE001 - translated into one of our errors below
            raise translate_error(e, where, self._token_hint) from None
        if not isinstance(data, dict):
            raise HubError(f"{where}: the hub answered something other than a repo's info")
        return data

    def _sha(self, info: dict[str, Any], repo_id: str, repo_type: str, revision: str) -> str:
        sha = info.get("sha")
        if not isinstance(sha, str) or not sha:
            where = _where(repo_id, repo_type, revision, self.endpoint)
            raise HubError(f"{where}: the hub did not say which commit this is")
        return sha


def _where(repo_id: str, repo_type: str, revision: str, endpoint: str) -> str:
    return f"{repo_type} {repo_id} at revision {revision!r} on {endpoint}"


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def translate_error(error: Exception, where: str, token_hint: TokenHint) -> Exception:
    """huggingface_hub's exceptions -> ours, with what to do next. A 401/403 says what to do with the
    token, whatever huggingface_hub made of it (it reads a 401 on a repo as "not found")."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    denied = (
        error.response.status_code if isinstance(error, HfHubHTTPError) and error.response is not None else 0
    )
    if denied in (401, 403):
        return token_hint.access_denied(where, denied)
    if isinstance(error, GatedRepoError):
        return NotFoundError(f"{where}: the repo is gated; accept its terms on the hub and set HF_TOKEN")
    if isinstance(error, RepositoryNotFoundError):
        return NotFoundError(
            f"{where}: repo not found (check the repo id; if it is private or gated: {token_hint.todo()})"
        )
    if isinstance(error, RevisionNotFoundError):
        return NotFoundError(f"{where}: revision not found (check the branch, tag or commit)")
    if isinstance(error, HfHubHTTPError):
        response = error.response
        status: Any = getattr(response, "status_code", "?") if response is not None else "?"
        if status in RETRY_STATUS:
            retry_after = retry_after_seconds(
                response.headers.get("Retry-After") if response is not None else None
            )
            return RetryableError(f"{where}: the hub answered HTTP {status}", retry_after)
        return HubError(f"{where}: the hub answered HTTP {status}")
    if isinstance(error, httpx2.HTTPError):  # no answer: a connection, TLS, redirect or decoding failure
        return request_error(error, where)
    if isinstance(error, ValueError):  # the body is not JSON
        return HubError(f"{where}: the hub's answer is not JSON ({error})")
    return HubError(f"{where}: {type(error).__name__}: {error}")
