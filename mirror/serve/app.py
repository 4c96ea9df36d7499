"""The ASGI application of `mirror serve`: the catalogue, the ModelScope routes and the Hugging Face routes
over one store view, behind the gate (mirror.serve.gate: the token check, the path check, the access log).

For the authors of routes:
- `routes(view)` of each module returns Starlette routes; they are tried in the order catalogue,
  modelscope, hf, and the first that matches answers. Until the catalogue answers `GET /`, a placeholder
  here does (the server is ready when `GET /` answers 200).
- A route tells the access log what a request is about by setting strings on `request.state` (the ASGI
  scope's "state", fresh for each request): `repo` (`str(RepoKey)`, e.g. `huggingface:dataset:org/name`,
  once the repo is found; else the repo id as asked), `revision` (as asked) and `path` (the file or folder
  in the repo). Unset or empty, the log writes null. The gate has already refused unknown tokens and
  unsafe paths.
- Error answers in the clients' shapes: `mirror.serve.replies` (`hub_error`, `modelscope_error`).
- A route that sends a file asks `view.policing.reason(key, commit, path)` first: a file the policy refuses
  is answered 403 with that reason, never sent nor redirected.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mirror.clock import Clock
from mirror.serve import catalogue, hf, modelscope
from mirror.serve.audit import AccessLog
from mirror.serve.gate import Gate
from mirror.serve.tokens import Tokens
from mirror.serve.view import StoreView
from mirror.settings import StoreName
from mirror.storage import open_storage
from mirror.store import Store
from mirror.validate.policy import DEFAULT_POLICY, Policy


async def ready(request: Request) -> Response:
    """GET / until the catalogue answers it: the server is up."""
    return PlainTextResponse("mirror serve: ready\n")


def create_app(
    store: StoreName,
    *,
    clock: Clock,
    tokens: Tokens | None = None,
    access_log: AccessLog | None = None,
    redirect: bool = False,
    policy: Policy = DEFAULT_POLICY,
) -> ASGIApp:
    """The application over the store `store` names (a folder, an s3:// URL); with `tokens`, only requests
    presenting one of them are answered; with `access_log`, each request is logged there; with `redirect`,
    an LFS file of a store in a bucket is answered by a 302 to a presigned URL of its blob; what `policy`
    denies is refused (403, mirror.serve.policing)."""
    view = StoreView(Store(open_storage(store, clock=clock), clock=clock), policy)
    files = [*modelscope.routes(view, redirect=redirect), *hf.routes(view, redirect=redirect)]
    routes = [*catalogue.routes(view), *files]
    routes.append(Route("/", ready, methods=["GET", "HEAD"]))
    return Gate(Starlette(routes=routes), clock=clock, tokens=tokens, access_log=access_log)
