"""(to be written) the modelscope routes of `mirror serve`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from mirror.serve.view import StoreView


def routes(view: StoreView) -> list[BaseRoute]:
    return []
