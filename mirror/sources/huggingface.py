"""The Hugging Face Hub source, on huggingface_hub's own API client."""

from __future__ import annotations

from typing import Any

from mirror.errors import HubError, NotFoundError, RetryableError
from mirror.retry import RETRY_STATUS, retry_after_seconds
from mirror.sources import FileRequest, RemoteFile, RemoteSnapshot


class HuggingFaceSource:
    name = "huggingface"

    def __init__(self, endpoint: str, token: str | None) -> None:
        from huggingface_hub import HfApi

        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._api = HfApi(endpoint=self.endpoint, token=token)

    def resolve(self, repo_id: str, repo_type: str, revision: str) -> RemoteSnapshot:
        where = f"{repo_type} {repo_id} at revision {revision!r} on {self.endpoint}"
        try:
            fetch_info = self._api.dataset_info if repo_type == "dataset" else self._api.model_info
            info = fetch_info(repo_id, revision=revision, files_metadata=True)
        except Exception as e:  # noqa: BLE001 - translated into one of our errors below
            raise translate_error(e, where) from None
        if not info.sha:
            raise HubError(f"{where}: the hub did not say which commit this is")
        files = tuple(
            RemoteFile(
                path=s.rfilename,
                size=int(s.lfs.size if s.lfs else (s.size or 0)),
                oid=s.blob_id,
                lfs=s.lfs is not None,
                sha256=s.lfs.sha256 if s.lfs else None,
            )
            for s in (info.siblings or [])
        )
        return RemoteSnapshot(commit=info.sha, files=files)

    def file_request(self, repo_id: str, repo_type: str, commit: str, path: str) -> FileRequest:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils._headers import build_hf_headers

        url = hf_hub_url(repo_id, path, repo_type=repo_type, revision=commit, endpoint=self.endpoint)
        headers = build_hf_headers(token=self._token, library_name="mirror")
        return FileRequest(url=url, headers=headers)


def translate_error(error: Exception, where: str) -> Exception:
    """huggingface_hub's exceptions -> ours, with what to do next."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, GatedRepoError):
        return NotFoundError(f"{where}: the repo is gated; accept its terms on the hub and set HF_TOKEN")
    if isinstance(error, RepositoryNotFoundError):
        return NotFoundError(
            f"{where}: repo not found (check the repo id; if it is private or gated, set HF_TOKEN "
            "or the manifest's token_env)"
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
    if isinstance(error, httpx2.TransportError):
        return RetryableError(f"{where}: connection failed: {type(error).__name__}")
    return HubError(f"{where}: {type(error).__name__}: {error}")
