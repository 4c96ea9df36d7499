"""The Hugging Face Hub source: the URLs of its API and files, and what its answers mean.

The two metadata requests are the ones huggingface_hub's `HfApi.model_info` (`dataset_info`) makes, with its
headers, over its session (see mirror.http); not importing `HfApi` itself keeps a cron run's start short.
`hub_scan` asks the hub for its own scan of a commit's files (what its answers mean: mirror.sources.hub_scan).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from mirror.errors import HubError
from mirror.http import FileRequest, get_json, hf_headers, post_form_json
from mirror.sources import HubSource, RemoteFile, RemoteSnapshot
from mirror.sources.hub_scan import HubScan, file_statuses, finding, flagged_paths, scans_done

# Files per paths-info request with `expand` (the Hub answers at most 50 expanded entries at once).
PATHS_INFO_BATCH = 50


class HuggingFaceSource(HubSource):
    name = "huggingface"
    headers = staticmethod(hf_headers)

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

    def hub_scan(self, repo_id: str, repo_type: str, commit: str, paths: Iterable[str]) -> HubScan:
        """The hub's own scan of `paths` (files of `commit`): a `hub_flagged` finding per file it flagged.

        One request when nothing is flagged: the repo info with `securityStatus=true` (HfApi.model_info's
        `securityStatus`) lists the files with issues; then paths-info with `expand=true` for those files only
        (one request per PATHS_INFO_BATCH), for the hub's words. The tree listing with `expand=true` would
        give the same per file, but at 50 entries a request for every file of the repo, each costing the hub a
        last-commit lookup. A hub that does not report, or a request that fails, gives no finding and a note:
        never an error (the sync does not depend on it)."""
        where = _where(repo_id, repo_type, commit, self.endpoint)
        try:
            info = self._info(repo_id, repo_type, commit, params={"securityStatus": True})
        except HubError as e:
            return HubScan(notes=(f"the hub's own scan was not read: {e}",))
        flagged = flagged_paths(info, paths)
        if flagged is None:
            return HubScan(notes=(f"{where}: the hub does not report a scan of its own",))
        notes = [] if scans_done(info) else [f"{where}: the hub has not finished scanning this revision"]
        statuses: dict[str, Any] = {}
        names = sorted(flagged)
        url = f"{self.endpoint}/api/{repo_type}s/{repo_id}/paths-info/{quote(commit, safe='')}"
        for start in range(0, len(names), PATHS_INFO_BATCH):
            form: Mapping[str, Any] = {"paths": names[start : start + PATHS_INFO_BATCH], "expand": True}
            try:
                entries = post_form_json(url, where, self._token_hint, headers=self._headers, form=form)
            except (HubError, ValueError) as e:
                notes.append(f"the hub's detail of its scan was not read ({e}): its level is recorded")
                break
            statuses.update(file_statuses(entries))
        findings = tuple(finding(path, statuses.get(path), flagged[path]) for path in names)
        return HubScan(findings, tuple(notes))

    def _info(
        self,
        repo_id: str,
        repo_type: str,
        revision: str,
        *,
        blobs: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`GET /api/{models,datasets}/{repo}/revision/{revision}[?blobs=true]`, as HfApi sends it."""
        where = _where(repo_id, repo_type, revision, self.endpoint)
        url = f"{self.endpoint}/api/{repo_type}s/{repo_id}/revision/{quote(revision, safe='')}"
        params = {**({"blobs": True} if blobs else {}), **(params or {})}
        try:
            data = get_json(url, where, self._token_hint, headers=self._headers, params=params)
        except ValueError as e:
            raise HubError(f"{where}: the hub's answer is not JSON ({e})") from None
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
