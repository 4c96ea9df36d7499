"""The ModelScope API of `mirror serve`: what `modelscope.snapshot_download` and `model_file_download` call.

    GET       /api/v1/{models|datasets}/{owner}/{name}[?Revision=R]           repo info
    GET       /api/v1/{models|datasets}/{owner}/{name}/revisions              RevisionMap: Branches, Tags
    GET       /api/v1/{models|datasets}/{owner}/{name}/repo/files?Revision=R[&Recursive=True][&Root=D]
                                                       [&PageNumber=N&PageSize=M]   the files (and folders)
    GET       /api/v1/{models|datasets}/{owner}/{name}/repo/tree?...          the same (what datasets page)
    HEAD|GET  /api/v1/{models|datasets}/{owner}/{name}/repo?Revision=R&FilePath=P   a file, with Range
              with `redirect`, an LFS file is a 302 to its object in the bucket (not with a Cookie);
              a file the policy refuses: 403 with the reason in the envelope's Message
    GET       /api/v1/repos/internalAccelerationInfo                          region probe: no region
    *         /openapi/...                                                    404 ResourceNotFound

Answers use ModelScope's envelope `{"Code", "Success", "Message", "RequestId", "Data"}`; what the store
does not hold is a 404 in the same envelope (the client raises at once, no retry).

Which repo an id names: a ModelScope-source repo first, else the Hugging Face-source repo of that id. On a
Hugging Face repo, `master` (ModelScope's default branch, also what a missing `Revision` means) is the
repo's default branch `main` unless the repo has a ref named `master`. The store does not tell branches
from tags, so `/revisions` lists every ref as a branch and no tags: `model_file_download` without a
revision then takes `master`, never a guessed release tag.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mirror.clock import parse_iso
from mirror.repo import HUBS
from mirror.serve.files import file_response
from mirror.serve.hf.answers import Folder, tree
from mirror.serve.replies import modelscope_error
from mirror.serve.view import ServedCommit, ServedRepo, StoreView

MASTER = HUBS["modelscope"].default_revision
SOURCES = ("modelscope", "huggingface")  # which source an id names first
_KINDS = {"models": "model", "datasets": "dataset"}
_PREFIX = "/api/v1/{kind}/{owner}/{name}"
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def envelope(data: Any) -> JSONResponse:
    """A successful answer in ModelScope's envelope (its errors: `replies.modelscope_error`)."""
    body = {"Code": 200, "Success": True, "Message": "success", "RequestId": uuid.uuid4().hex, "Data": data}
    return JSONResponse(body)


def not_found(message: str) -> JSONResponse:
    return modelscope_error(404, message)


def find_repo(view: StoreView, kind: str, owner: str, name: str) -> ServedRepo | None:
    """The repo `owner/name` of that kind, ModelScope's first (None for an unknown kind or repo)."""
    repo_type = _KINDS.get(kind)
    if repo_type is None:
        return None
    for source in SOURCES:
        repo = view.repo(source, repo_type, f"{owner}/{name}")
        if repo is not None:
            return repo
    return None


def commit_of(repo: ServedRepo, revision: str) -> str | None:
    """The commit a revision names as ModelScope names it: `master` is the default branch of a repo that
    has no `master`."""
    if revision == MASTER and MASTER not in repo.refs:
        revision = repo.default_branch
    return repo.commit_of(revision)


def revision_map(repo: ServedRepo) -> dict[str, list[dict[str, Any]]]:
    """Every ref as a branch (`master` first, an alias of the default branch when the repo has none)."""
    refs = dict(sorted(repo.refs.items()))
    if MASTER not in refs and repo.default_branch in refs:
        refs = {MASTER: repo.refs[repo.default_branch], **refs}
    branches = [
        {
            "Revision": name,
            "CommitId": ref.commit,
            "CreatedAt": parse_iso(ref.synced_at) or 0,
            "CreatedBy": "mirror",
            "Description": "",
        }
        for name, ref in refs.items()
    ]
    return {"Branches": branches, "Tags": []}


def list_entries(commit: ServedCommit, root: str, recursive: bool) -> list[dict[str, Any]] | None:
    """The listing of folder `root` ("" the top), files and folders sorted by path; None if no such folder.
    The folders are those of the Hub's tree listing (`hf.answers.tree`), with their git tree ids."""
    entries = tree(commit.files, root, recursive)
    if entries is None:
        return None
    when = parse_iso(commit.synced_at) or 0
    return [
        {
            "Name": e.path.rsplit("/", 1)[-1],
            "Path": e.path,
            "Type": "tree" if isinstance(e, Folder) else "blob",
            "Size": 0 if isinstance(e, Folder) else e.size,
            "Sha256": "" if isinstance(e, Folder) else e.sha256,
            "IsLFS": not isinstance(e, Folder) and e.lfs,
            "Mode": "040000" if isinstance(e, Folder) else "100644",
            "Id": e.oid,
            "Revision": commit.commit,
            "CommitId": commit.commit,
            "CommitMessage": "",
            "CommittedDate": when,
            "CommitterName": "mirror",
        }
        for e in entries
    ]


def page(entries: list[dict[str, Any]], number: str | None, size: str | None) -> list[dict[str, Any]] | None:
    """Page `number` (from 1) of `size` entries; everything when neither is given; None when not numbers."""
    if number is None and size is None:
        return entries
    try:
        n, k = max(1, int(number or 1)), max(1, int(size or 100))
    except ValueError:
        return None
    return entries[(n - 1) * k : n * k]


def repo_info(repo: ServedRepo, commit: ServedCommit, revision: str) -> dict[str, Any]:
    """The repo info the client's `get_repo` reads (after /openapi's 404), with the revision asked."""
    owner, name = repo.key.repo_id.split("/", 1)
    arrived = [parse_iso(ref.synced_at) or 0 for ref in repo.refs.values()]
    return {
        "Id": int(hashlib.sha256(str(repo.key).encode()).hexdigest()[:8], 16),  # stable per repo
        "Path": owner,
        "Name": name,
        "Visibility": 5,  # public: whoever passes the gate may read it
        "Description": "",
        "License": "",
        "Tags": [],
        "Downloads": 0,
        "Likes": 0,
        "CreatedAt": min(arrived, default=0),
        "UpdatedAt": parse_iso(commit.synced_at) or 0,
        "Revision": revision,
        "CommitId": commit.commit,
        "StorageSize": sum(f.size for f in commit.files),
    }


def note(request: Request, repo: str, revision: str | None = None, path: str | None = None) -> None:
    """Tell the access log what this request is about (mirror.serve.app): the repo (`str(RepoKey)` once
    found, else the id as asked), the revision as asked and the path in the repo."""
    request.state.repo, request.state.revision, request.state.path = repo, revision, path


def routes(view: StoreView, *, redirect: bool = False) -> list[BaseRoute]:
    """ModelScope's routes over `view`; with `redirect`, the download of an LFS file in a bucket is a 302 to
    the object (`files.file_response`) unless the request carries a cookie."""
    # The handlers that read the store are plain functions: Starlette runs them in its thread pool, so
    # the event loop never waits on the disk.

    def lookup(request: Request) -> ServedRepo | JSONResponse:
        p = request.path_params
        repo = find_repo(view, p["kind"], p["owner"], p["name"])
        if repo is None:
            note(request, f"{p['owner']}/{p['name']}")
            kind = _KINDS.get(p["kind"], "repo").capitalize()
            return not_found(f"{kind} {p['owner']}/{p['name']} does not exist")
        return repo

    def at_revision(request: Request, path: str = "") -> tuple[ServedRepo, str] | JSONResponse:
        """The repo and the commit the request names (noted for the access log), or the not-found answer."""
        repo = lookup(request)
        if isinstance(repo, JSONResponse):
            return repo
        revision = request.query_params.get("Revision") or MASTER
        note(request, str(repo.key), revision, path)
        commit = commit_of(repo, revision)
        if commit is None:
            return not_found(f"Revision {revision} of {repo.key.repo_id} does not exist")
        return repo, commit

    def held(request: Request) -> tuple[ServedRepo, ServedCommit] | JSONResponse:
        """As at_revision, with the files the store holds of the commit."""
        found = at_revision(request)
        if isinstance(found, JSONResponse):
            return found
        repo, commit = found
        served = repo.at(commit)
        if served is None:  # the record went away between two reads
            return not_found(f"Revision {commit} of {repo.key.repo_id} does not exist")
        return repo, served

    def info(request: Request) -> Response:
        found = held(request)
        if isinstance(found, Response):
            return found
        repo, served = found
        return envelope(repo_info(repo, served, request.query_params.get("Revision") or MASTER))

    def revisions(request: Request) -> Response:
        repo = lookup(request)
        if isinstance(repo, JSONResponse):
            return repo
        note(request, str(repo.key))
        return envelope({"RevisionMap": revision_map(repo)})

    def files(request: Request) -> Response:
        found = held(request)
        if isinstance(found, Response):
            return found
        q = request.query_params
        root = q.get("Root", "").strip("/")
        entries = list_entries(found[1], root, q.get("Recursive", "").lower() in ("1", "true"))
        if entries is None:
            return not_found(f"Path {root} does not exist")
        paged = page(entries, q.get("PageNumber"), q.get("PageSize"))
        if paged is None:
            return modelscope_error(400, "Invalid PageNumber or PageSize")
        return envelope({"Files": paged})

    def download(request: Request) -> Response:
        path = request.query_params.get("FilePath", "").strip("/")
        found = at_revision(request, path)
        if isinstance(found, Response):
            return found
        repo, commit = found
        if not path:
            return modelscope_error(400, "FilePath is required")
        record = view.record(repo.key, commit, path)  # not repo.at(): one blob checked, not every one
        response = None
        if record is not None:
            reason = view.policing.reason(repo.key, commit, path)
            if reason is not None:  # before any redirect: a refused file has no URL to be sent to
                return modelscope_error(403, reason)
            headers = {"ETag": f'"{record.etag}"', "X-Linked-ETag": f'"{record.sha256}"'}
            name = path.rsplit("/", 1)[-1]
            # the modelscope client (requests) sends its cookies, a token among them, to wherever it is
            # redirected: a request with a cookie is answered here, never sent to the object store
            moved = redirect and "cookie" not in request.headers
            response = file_response(view, record, headers, filename=name, redirect=moved)
        if response is None:
            return not_found(f"File {path} does not exist at revision {commit}")
        return response

    async def region(request: Request) -> Response:
        return envelope({"InternalRegionQueryAddress": ""})  # not inside Alibaba Cloud: no region to use

    async def openapi(request: Request) -> Response:
        # The client asks /openapi/v1 first and falls back to the /api/v1 routes on this answer.
        return JSONResponse({"success": False, "code": "ResourceNotFound", "message": "Not Found"}, 404)

    async def unknown(request: Request) -> Response:
        return not_found("Not Found")

    return [
        Route("/api/v1/repos/internalAccelerationInfo", region, methods=["GET"]),
        Route(_PREFIX, info, methods=["GET"]),
        Route(f"{_PREFIX}/revisions", revisions, methods=["GET"]),
        Route(f"{_PREFIX}/repo/files", files, methods=["GET"]),
        Route(f"{_PREFIX}/repo/tree", files, methods=["GET"]),
        Route(f"{_PREFIX}/repo", download, methods=["GET"]),
        Route("/api/v1/{rest:path}", unknown, methods=_METHODS),
        Route("/openapi/{rest:path}", openapi, methods=_METHODS),
    ]
