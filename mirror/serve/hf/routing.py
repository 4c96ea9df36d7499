"""The Hugging Face Hub's URLs over a store view: which repo, revision and path a URL names, and the
handler that answers it (the answers themselves are built in `answers`).

    HEAD|GET /[datasets/|spaces/]{repo}/resolve/{rev}/{path}    the file (Range, If-Range); with
             `redirect`, an LFS file is a 302 to its object in the bucket (headers as the Hub's 302);
             a file the policy refuses: 403 with the reason (`answers.policy_refused`)
    GET      /api/{models|datasets|spaces}/{repo}[/revision/{rev}]   repo info (`?blobs=true`)
    GET      /api/{t}/{repo}/tree/{rev}[/{path}]                     listing (`recursive`, paged)
    POST     /api/{t}/{repo}/paths-info/{rev}                        entries of `paths` (form or JSON)
    GET      /api/{t}/{repo}/refs                                    revision names

The path is read from the raw URL, one segment at a time, so a percent-encoded `/` stays inside its
segment: a revision `refs/pr/1` comes as `refs%2Fpr%2F1` (as huggingface_hub quotes it), and a path in
the tree route as one segment. A revision spread over several segments is read too, the shortest name the
repo has first. Repos of source "huggingface" are served here; ModelScope's are served on its own routes.
Over a folder the store is read on the event loop (a look is an lstat); over a bucket, where a look is a
request, in a worker thread, so one answer never holds up the others.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mirror.bounded import CARD
from mirror.cards import card_data
from mirror.serve.files import file_response
from mirror.serve.hf import answers
from mirror.serve.hf.answers import Miss
from mirror.serve.policing import Unscanned
from mirror.serve.view import ServedCommit, ServedRepo, StoreView

SOURCE = "huggingface"
API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_TYPES = {"datasets": "dataset", "spaces": "space"}  # the prefix of a file URL; models have none
MAX_FORM = 1 << 20  # bytes of a paths-info body
README = "README.md"  # the card, whose metadata repo info carries
CARDS_KEPT = 256  # parsed cards kept, the oldest forgotten first

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


def routes(view: StoreView, *, page_size: int = answers.PAGE_SIZE, redirect: bool = False) -> list[BaseRoute]:
    """The Hub's routes over `view`; `page_size` tree entries per answer; with `redirect`, the resolve of an
    LFS file in a bucket is a 302 to the object (`files.file_response`)."""
    hub = HubRoutes(view, page_size, redirect)
    api = [Route(f"/api/{t}/{{rest:path}}", hub.api, methods=["GET", "HEAD", "POST"]) for t in API_TYPES]
    # a repo id is one or two segments, after an optional type prefix: the handler reads the raw path
    files = [
        Route(prefix + "/resolve/{rest:path}", hub.resolve, methods=["GET", "HEAD"])
        for prefix in ("/{a}", "/{a}/{b}", "/{a}/{b}/{c}")
    ]
    return [*api, *files]


def segments(request: Request) -> list[str]:
    """The URL's path as segments, each percent-decoded on its own."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.decode("latin-1").partition("?")[0]
    return [unquote(s) for s in path.split("/")[1:]]


def note(request: Request, repo: str, revision: str | None = None, path: str | None = None) -> None:
    """Tell the access log what the request named: the repo (its key once found, else the id as asked),
    the revision as asked, the path in the repo."""
    state = request.state
    state.repo, state.revision, state.path = repo, revision, path


def flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


def answering(handler: Handler) -> Handler:
    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except Miss as miss:
            return miss.response()

    return answer


class HubRoutes:
    def __init__(self, view: StoreView, page_size: int, redirect: bool = False) -> None:
        self.view = view
        self.page_size = page_size
        self.redirect = redirect
        self.cards: dict[str, dict[str, Any] | None] = {}  # a README's sha256 -> its card's metadata
        self.lock = threading.Lock()
        self.api = answering(self._api)
        self.resolve = answering(self._resolve)

    # --- naming -------------------------------------------------------------------------------------

    def find(
        self, request: Request, repo_type: str, segs: list[str], words: Sequence[str], bare: bool
    ) -> tuple[ServedRepo, str | None, list[str]]:
        """The repo `org/name/<word>/...` or `name/<word>/...` names (or a bare repo id, when `bare`), the
        word and what follows it."""
        candidates: list[tuple[str, str | None, list[str]]] = []
        for n in (2, 1):
            if len(segs) > n and segs[n] in words:
                candidates.append(("/".join(segs[:n]), segs[n], segs[n + 1 :]))
            elif bare and len(segs) == n:
                candidates.append(("/".join(segs), None, []))
        if not candidates:
            raise answers.no_route()
        for repo_id, word, tail in candidates:
            repo = self.view.repo(SOURCE, repo_type, repo_id)
            if repo is not None:
                note(request, str(repo.key))
                return repo, word, tail
        note(request, candidates[0][0])
        raise answers.repo_not_found()

    def revision(
        self, request: Request, repo: ServedRepo, tail: list[str], whole: bool
    ) -> tuple[str, str, list[str]]:
        """The revision at the start of `tail` (all of it when `whole`), its commit, and what follows."""
        ends = [len(tail)] if whole else range(1, len(tail) + 1)
        for end in ends:
            name = "/".join(tail[:end])
            commit = repo.commit_of(name)
            if commit is not None:
                note(request, str(repo.key), name)
                return name, commit, tail[end:]
        name = "/".join(tail) if whole else (tail[0] if tail else "")
        note(request, str(repo.key), name)
        raise answers.revision_not_found(name)

    def served(self, repo: ServedRepo, commit: str) -> ServedCommit:
        served = repo.at(commit)
        if served is None:  # the record went away between two reads
            raise answers.revision_not_found(commit)
        return served

    # --- files --------------------------------------------------------------------------------------

    async def _reading(self, read: Callable[..., T], *args: Any) -> T:
        """`read(*args)`, which reads the store: on the event loop over a folder (a look is an lstat), in a
        worker thread over a bucket (a look is a request, which must not hold up the other answers)."""
        if self.view.store.local_root is None:
            return await anyio.to_thread.run_sync(read, *args)
        return read(*args)

    async def _resolve(self, request: Request) -> Response:
        try:
            return await self._reading(self._resolved, request, self.view.store.local_root is None)
        except Unscanned:  # the server scans the commit first: never on the event loop
            return await anyio.to_thread.run_sync(self._resolved, request, True)

    def _resolved(self, request: Request, scan: bool) -> Response:
        """The file's answer; `Unscanned` when the policy must scan the commit and `scan` is False."""
        segs = segments(request)
        repo_type = "model"
        if segs[0] in URL_TYPES and "resolve" in segs[2:4]:  # not a model repo named "datasets/..."
            repo_type, segs = URL_TYPES[segs[0]], segs[1:]
        repo, _, tail = self.find(request, repo_type, segs, ("resolve",), bare=False)
        if len(tail) < 2:  # no path
            commit = repo.commit_of(tail[0]) if tail else None
            if commit is None:
                raise answers.revision_not_found(tail[0] if tail else "")
            raise answers.entry_not_found(commit)
        name, commit, rest = self.revision(request, repo, tail[:-1], whole=False)
        path = "/".join([*rest, tail[-1]])
        note(request, str(repo.key), name, path)
        record = self.view.record(repo.key, commit, path)
        response = None
        if record is not None:
            reason = self.view.policing.reason(repo.key, commit, path, scan=scan)
            if reason is not None:  # before any redirect: a refused file has no URL to be sent to
                raise answers.policy_refused(commit, reason)
            headers = answers.file_headers(record, commit)
            response = file_response(self.view, record, headers, redirect=self.redirect)
        if response is None:
            raise answers.entry_not_found(commit)
        return response

    def card(self, served: ServedCommit) -> dict[str, Any] | None:
        """The metadata of the commit's README.md, parsed once per content."""
        readme = served.file(README)
        if readme is None or readme.size > CARD.size:
            return None
        with self.lock:
            if readme.sha256 in self.cards:
                return self.cards[readme.sha256]
        try:
            with self.view.store.open_blob(readme.sha256, 0, readme.size) as f:
                card = card_data(f.read())
        except OSError:
            return None
        with self.lock:  # over a bucket, answers are made in several threads
            if len(self.cards) >= CARDS_KEPT:
                self.cards.pop(next(iter(self.cards)))
            self.cards[readme.sha256] = card
        return card

    # --- the API ------------------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        answer = await self._reading(self._answer, request)
        if isinstance(answer, Response):
            return answer
        repo, commit = answer  # paths-info: the body is read once the repo and revision are known
        paths = await paths_asked(request)
        return await self._reading(self._paths_info, repo, commit, paths)

    def _paths_info(self, repo: ServedRepo, commit: str, paths: list[str]) -> Response:
        entries = answers.entries_at(self.served(repo, commit).files, paths)
        return JSONResponse([answers.entry_json(e) for e in entries])

    def _answer(self, request: Request) -> Response | tuple[ServedRepo, str]:
        """The answer of an API request, or for paths-info the repo and commit it asks about."""
        segs = segments(request)
        repo_type = API_TYPES.get(segs[1])
        if repo_type is None:
            raise answers.no_route()
        words = ("revision", "tree", "paths-info", "refs")
        repo, word, tail = self.find(request, repo_type, segs[2:], words, bare=True)
        if request.method != ("POST" if word == "paths-info" else "GET") and request.method != "HEAD":
            raise answers.no_route()
        if word == "refs":
            if tail:
                raise answers.no_route()
            return JSONResponse(answers.refs_json(repo))
        if word is None:
            tail = [repo.default_branch]
        if not tail:
            raise answers.revision_not_found("")
        if word in (None, "revision"):
            _, commit, _ = self.revision(request, repo, tail, whole=True)
            served = self.served(repo, commit)
            blobs = flag(request.query_params.get("blobs"))
            return JSONResponse(answers.repo_info(repo, served, blobs, self.card(served)))
        if word == "paths-info":
            _, commit, _ = self.revision(request, repo, tail, whole=True)
            return repo, commit
        name, commit, rest = self.revision(request, repo, tail, whole=False)
        under = "/".join(rest).strip("/")
        note(request, str(repo.key), name, under or None)
        return self.tree(request, commit, self.served(repo, commit), under)

    def tree(self, request: Request, commit: str, served: ServedCommit, under: str) -> Response:
        query = request.query_params
        entries = answers.tree(served.files, under, flag(query.get("recursive")))
        if entries is None:
            raise answers.entry_not_found(commit)
        try:
            start, end, cursor = answers.page(len(entries), query.get("cursor"), self.page_size)
        except ValueError:
            raise Miss(None, "Invalid cursor", status=400) from None
        headers = {"X-Repo-Commit": commit}
        if cursor is not None:
            headers["Link"] = f'<{next_page(request, cursor)}>; rel="next"'
        return JSONResponse([answers.entry_json(e) for e in entries[start:end]], headers=headers)


def next_page(request: Request, cursor: str) -> str:
    """The absolute URL of the next page: this one's, from the `Host` the client asked, with the scheme a
    proxy in front says the client used (`X-Forwarded-Proto`), and the next cursor."""
    url = request.url.include_query_params(cursor=cursor)
    scheme = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return str(url.replace(scheme=scheme) if scheme in ("http", "https") else url)


async def paths_asked(request: Request) -> list[str]:
    """The `paths` of a paths-info body: a form (what huggingface_hub posts) or JSON."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise Miss(None, "Request body too large", status=413)
    if "json" in request.headers.get("content-type", ""):
        try:
            paths = json.loads(body).get("paths", [])
        except (ValueError, AttributeError):
            raise Miss(None, "Invalid JSON body", status=400) from None
    else:
        paths = parse_qs(body.decode("utf-8", "replace")).get("paths", [])
    if not isinstance(paths, list):
        paths = [paths]
    return [str(p) for p in paths]
