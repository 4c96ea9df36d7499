"""The ASGI application of `mirror serve`: the catalogue, the ModelScope routes and the Hugging Face routes
over one store view. (Access control and the access log: to be written.)"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mirror.clock import Clock
from mirror.serve import catalogue, hf, modelscope
from mirror.serve.view import StoreView
from mirror.store import Store


async def ready(request: Request) -> Response:
    """GET / until the catalogue answers it: the server is up."""
    return PlainTextResponse("mirror serve: ready\n")


def create_app(store_root: Path, *, clock: Clock) -> Starlette:
    view = StoreView(store_root, Store(store_root, clock=clock))
    routes = [*catalogue.routes(view), *modelscope.routes(view), *hf.routes(view)]
    # The first route that matches answers: the catalogue's GET / goes before this placeholder.
    routes.append(Route("/", ready, methods=["GET", "HEAD"]))
    return Starlette(routes=routes)
