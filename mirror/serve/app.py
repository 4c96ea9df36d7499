"""The ASGI application of `mirror serve`: the catalogue, the ModelScope routes and the Hugging Face routes
over one store view. (Access control and the access log: to be written.)"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette

from mirror import clock
from mirror.serve import catalogue, hf, modelscope
from mirror.serve.view import StoreView
from mirror.store import Store


def create_app(store_root: Path) -> Starlette:
    view = StoreView(store_root, Store(store_root, clock=clock.SYSTEM))
    return Starlette(routes=[*catalogue.routes(view), *modelscope.routes(view), *hf.routes(view)])
