"""The layouts an import writes and `mirror verify --target` and `mirror inventory` read: the Hugging Face
cache (`hf`), the ModelScope cache (`modelscope`), plain folders (`dir`), a mirror store (`store`), each a
`Layout`; what a target holds (`held`) and what a volume set's imports keep in it between runs (`kept`).

Adding a layout is one module with a `Layout` subclass, and one line in `LAYOUTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mirror.errors import UsageError
from mirror.layouts.dir import DirLayout
from mirror.layouts.hf import HfLayout
from mirror.layouts.layout import Layout, no_checkpoint
from mirror.layouts.modelscope import ModelScopeLayout
from mirror.layouts.store import StoreLayout
from mirror.settings import local_target

LAYOUTS: dict[str, Callable[..., Layout]] = {
    "hf": HfLayout,
    "modelscope": ModelScopeLayout,
    "dir": DirLayout,
    "store": StoreLayout,
}


def make_layout(
    layout: str,
    target: Path | str,
    *,
    symlinks: bool = True,
    link_shared: bool = False,
    checkpoint: Callable[[], None] = no_checkpoint,
) -> Layout:
    """The layout named `layout` over `target`; `checkpoint` is called after each write it makes."""
    try:
        factory = LAYOUTS[layout]
    except KeyError:
        raise UsageError(f"unknown layout {layout!r}; choose one of {', '.join(sorted(LAYOUTS))}") from None
    where = target if layout == "store" else local_target(target)  # a store may be in a bucket
    return factory(where, symlinks=symlinks, link_shared=link_shared, checkpoint=checkpoint)


__all__ = ["LAYOUTS", "Layout", "local_target", "make_layout"]
